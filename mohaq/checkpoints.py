"""Loading a checkpoint's weights into a model built from a config, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from mohaq.quant.assignment import BitAssignment

# Hyperparameters that decide the shape of the network: a checkpoint trained
# with other values cannot be loaded into this model.
ARCHITECTURE_KEYS: tuple[str, ...] = (
    "num_features", "num_classes", "cell", "hidden_size", "num_layers",
    "bidirectional", "projection_size", "granularity",
)  # fmt: skip


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint file at the given path."""


def require_checkpoint_file(path: str | Path) -> Path:
    """``path`` as a Path if a file is there.

    Raises:
        CheckpointNotFoundError: naming the path and the checkpoints beside it.
    """
    path = Path(path)
    if path.is_file():
        return path
    folder = path.parent
    nearby = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    seen = f"; {folder} holds {', '.join(nearby)}" if nearby else ""
    raise CheckpointNotFoundError(f"checkpoint {str(path)!r} does not exist{seen}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a Lightning checkpoint on the CPU.

    Raises:
        CheckpointNotFoundError: if there is no file at ``path`` (a FileNotFoundError).
        CheckpointMismatchError: if the file is not a Lightning checkpoint.
    """
    path = require_checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise CheckpointMismatchError(f"cannot read checkpoint {str(path)!r}: {error}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointMismatchError(
            f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry)"
        )
    return checkpoint


def check_architecture(module: pl.LightningModule, checkpoint: dict[str, Any], path: str) -> None:
    """Raises CheckpointMismatchError naming every architecture value that differs."""
    stored = checkpoint.get("hyper_parameters") or {}
    current = dict(module.hparams)
    differences = [
        f"{key}: checkpoint {stored[key]!r}, config {current.get(key)!r}"
        for key in ARCHITECTURE_KEYS
        if key in stored and key in current and stored[key] != current[key]
    ]
    if differences:
        raise CheckpointMismatchError(
            f"checkpoint {path!r} does not match the model config ("
            + "; ".join(differences)
            + "). Use the config the checkpoint was trained with."
        )


def load_model_weights(module: pl.LightningModule, path: str | Path) -> dict[str, Any]:
    """Loads a checkpoint's weights (not its trainer state) into ``module``.

    The checkpoint's bit assignment, if any, is applied first, so quantizers are
    in the state the weights were saved in.

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointMismatchError: if the architecture or the tensors do not match.
    """
    from mohaq.system import BIT_ASSIGNMENT_KEY

    checkpoint = read_checkpoint(path)
    check_architecture(module, checkpoint, str(path))
    stored_bits = checkpoint.get(BIT_ASSIGNMENT_KEY)
    if stored_bits and hasattr(module, "apply_bit_assignment"):
        module.apply_bit_assignment(BitAssignment.from_dict(stored_bits))
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r} does not match the model: {error}"
        ) from error
    return checkpoint
