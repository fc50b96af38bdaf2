"""Integer implementations of the model's layers: lowering plus a runner per layer type."""
