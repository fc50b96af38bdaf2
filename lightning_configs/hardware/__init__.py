"""Platform descriptions for the hardware cost models, installed as `mohaq.configs.hardware`."""
