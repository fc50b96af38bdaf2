from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tiny_data import TinyDataModule

from mohaq.callbacks.qat import QuantizationAwareTraining
from mohaq.quant.assignment import BitAssignment, BitAssignmentError
from mohaq.system import AcousticSystem


def _system() -> AcousticSystem:
    return AcousticSystem(
        num_features=5, num_classes=6, cell="sru", hidden_size=16, num_layers=2,
        projection_size=8, dropout=0.0, learning_rate=0.01,
    )  # fmt: skip


def _trainer(tmp_path: Path, callback: QuantizationAwareTraining, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=str(tmp_path), accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=[callback], **kwargs,
    )  # fmt: skip


def test_arguments_are_validated_in_init() -> None:
    with pytest.raises(ValueError, match="exactly one of `bits`"):
        QuantizationAwareTraining()
    with pytest.raises(ValueError, match="uniform_bits must be in \\[2, 16\\], got 1"):
        QuantizationAwareTraining(uniform_bits=1)


def test_unknown_point_fails_before_training(tmp_path: Path) -> None:
    callback = QuantizationAwareTraining(bits={"no.such.point": 4})
    with pytest.raises(BitAssignmentError, match="valid points"):
        _trainer(tmp_path, callback, max_steps=1).fit(_system(), datamodule=TinyDataModule())


def test_qat_fit_quantizes_and_the_checkpoint_restores_it(tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = TinyDataModule()
    float_system = _system()
    float_trainer = pl.Trainer(
        default_root_dir=str(tmp_path), accelerator="cpu", logger=False, max_epochs=6,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    float_trainer.fit(float_system, datamodule=data)
    float_path = tmp_path / "float.ckpt"
    float_trainer.save_checkpoint(float_path)

    callback = QuantizationAwareTraining(uniform_bits=2, init_checkpoint=str(float_path))
    qat_system = _system()
    trainer = _trainer(tmp_path, callback, max_epochs=2)
    trainer.fit(qat_system, datamodule=data)
    expected = BitAssignment.uniform(qat_system.workload().names, 2)
    assert qat_system.bit_assignment == expected
    path = tmp_path / "qat.ckpt"
    trainer.save_checkpoint(path)
    restored = AcousticSystem.load_from_checkpoint(path)
    assert restored.bit_assignment == expected
    batch = next(iter(data.val_dataloader()))
    restored.eval()
    qat_system.eval()
    with torch.no_grad():
        assert torch.allclose(
            restored(batch[0], batch[2]), qat_system(batch[0], batch[2]), atol=1e-5
        )
        float_system.eval()
        # 2-bit quantization must change the outputs of the float model.
        assert not torch.allclose(
            float_system(batch[0], batch[2]), restored(batch[0], batch[2]), atol=1e-3
        )
    assert trainer.callbacks[0].state_dict()["bits"] == expected.to_dict()
