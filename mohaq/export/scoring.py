"""Scoring what would ship: the exported integer model or ONNX model inside `mohaq test`.

:func:`load_shipped_model` turns an export (its directory, ``model.safetensors``
or ``model.onnx``) into an ``nn.Module`` with the acoustic model's interface,
``forward(features, lengths) -> scores``. :func:`prepare_test` puts it in the
LightningModule in place of the float network, so the usual test loop
computes the PER and frame error of the exported model, and picks the data
split to score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mohaq.export.exporter import INTEGER_FILE, ONNX_FILE
from mohaq.export.files import read_program
from mohaq.export.program import ExportError, ExportFileNotFoundError
from mohaq.export.runtime import IntegerAcousticModel

Engine = Literal["integer", "onnx"]
ENGINES: tuple[str, ...] = get_args(Engine)
Split = Literal["test", "dev", "optimization", "train"]
SPLITS: tuple[str, ...] = get_args(Split)


class OnnxAcousticModel(nn.Module):
    """Runs an exported ONNX model with onnxruntime (CPU) behind the acoustic model's interface."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from mohaq.export.onnx_qdq import onnx_session

        self.path = Path(path)
        self.session = onnx_session(path)
        self.num_classes = int(self.session.get_outputs()[0].shape[-1])

    @torch.no_grad()
    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        inputs = {
            "features": features.detach().cpu().to(torch.float32).numpy(),
            "lengths": lengths.detach().cpu().to(torch.int64).numpy(),
        }
        (scores,) = self.session.run(["scores"], inputs)
        return torch.from_numpy(np.asarray(scores)).to(features.device)


def _resolve(path: str | Path, engine: str) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / (INTEGER_FILE if engine == "integer" else ONNX_FILE)
    if not path.is_file():
        raise ExportFileNotFoundError(
            f"no exported {engine} model at {str(path)!r}; run `mohaq export` first"
        )
    return path


def load_shipped_model(path: str | Path, engine: str = "integer") -> nn.Module:
    """The exported model at ``path`` (a directory or a file) run by ``engine``.

    Raises:
        ExportError: on an unknown engine.
        ExportFileNotFoundError: if the file is missing (a FileNotFoundError).
        ExportError: if it is not an exported model.
    """
    if engine not in ENGINES:
        raise ExportError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    resolved = _resolve(path, engine)
    if engine == "integer":
        return IntegerAcousticModel(read_program(resolved))
    return OnnxAcousticModel(resolved)


class SplitAsTest(pl.LightningDataModule):
    """Serves one split of a DataModule as its test set (everything else delegated)."""

    def __init__(self, datamodule: pl.LightningDataModule, split: str) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ExportError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        if split == "optimization" and not hasattr(datamodule, "optimization_dataloader"):
            raise ValueError(f"{type(datamodule).__name__} has no optimization set")
        self.inner, self.split = datamodule, split

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this object lacks: the wrapped DataModule's own
        # (e.g. ``optimization_dataloader``, which a calibrating callback looks for).
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str) -> None:
        if self.split != "test":
            self.inner.setup("fit")
        self.inner.setup(stage)

    def test_dataloader(self) -> DataLoader:
        if self.split == "test":
            return self.inner.test_dataloader()
        if self.split == "dev":
            return self.inner.val_dataloader()
        if self.split == "train":
            return self.inner.train_dataloader()
        return self.inner.optimization_dataloader(
            batch_size=getattr(self.inner, "batch_size", None)
        )


def prepare_test(
    system: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    *,
    exported: str | None,
    engine: str,
    split: str,
    ckpt_path: Any = None,
    callbacks: list[Any] | None = None,
) -> pl.LightningDataModule | None:
    """Swaps the exported model into ``system`` (if ``exported``) and picks the split.

    Returns:
        The DataModule to test on (``datamodule`` itself for the test split).

    Raises:
        ExportError: on a checkpoint given with an export, a quantization
            callback that would re-quantize the exported model, or a class
            count that differs from the data's.
    """
    if exported is not None:
        from mohaq.system import AcousticSystem

        if not isinstance(system, AcousticSystem):
            raise ExportError(
                f"--exported scores an AcousticSystem's integer program; the export of "
                f"{type(system).__name__} holds its quantized layers (mohaq-quantized-layers/1), "
                "checked when written: integers x scales equal the fake-quantized tensors "
                "(manifest: readback_max_difference) and its optimization-set metric is recorded"
            )
        if ckpt_path is not None:
            raise ExportError(
                "an exported model carries its own weights: give --exported or --ckpt_path, not both"
            )
        from mohaq.callbacks.qat import QuantizationAwareTraining

        if any(isinstance(callback, QuantizationAwareTraining) for callback in callbacks or []):
            raise ExportError(
                "the exported model is already quantized; drop the QuantizationAwareTraining callback"
            )
        shipped = load_shipped_model(exported, engine)
        expected = int(system.hparams.get("num_classes", shipped.num_classes))
        if shipped.num_classes != expected:
            raise ExportError(
                f"the exported model has {shipped.num_classes} classes but the data has {expected}"
            )
        system.model = shipped
    if split == "test" or datamodule is None:
        if split != "test":
            raise ExportError(f"scoring the {split!r} split needs a DataModule")
        return datamodule
    return SplitAsTest(datamodule, split)
