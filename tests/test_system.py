from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tiny_data import TinyDataModule

from mohaq.checkpoints import CheckpointMismatchError, load_model_weights
from mohaq.quant.assignment import BitAssignment
from mohaq.system import BIT_ASSIGNMENT_KEY, AcousticSystem


def tiny_system(**overrides: object) -> AcousticSystem:
    settings = dict(
        num_features=5, num_classes=6, cell="sru", hidden_size=16, num_layers=2,
        projection_size=8, dropout=0.0, learning_rate=0.01,
    )  # fmt: skip
    settings.update(overrides)
    return AcousticSystem(**settings)  # type: ignore[arg-type]


def quiet_trainer(tmp_path: Path, **kwargs: object) -> pl.Trainer:
    defaults = dict(
        default_root_dir=str(tmp_path), accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    defaults.update(kwargs)
    return pl.Trainer(**defaults)  # type: ignore[arg-type]


def test_scoring_map_must_cover_every_class() -> None:
    with pytest.raises(ValueError, match="scoring_map has 3 entries but num_classes is 6"):
        tiny_system(scoring_map=[0, 1, 2])


@pytest.mark.parametrize("cell", ["sru", "gru", "lstm"])
def test_training_learns_the_tiny_task(tmp_path: Path, cell: str) -> None:
    pl.seed_everything(0)
    data = TinyDataModule()
    system = tiny_system(cell=cell, projection_size=None if cell != "sru" else 8)
    trainer = quiet_trainer(tmp_path, max_epochs=8, enable_checkpointing=False)
    before = trainer.validate(system, datamodule=data, verbose=False)[0]
    trainer.fit(system, datamodule=data)
    after = trainer.validate(system, datamodule=data, verbose=False)[0]
    assert after["val/loss"] < 0.6 * before["val/loss"]
    assert after["val/fer"] < 0.35 < before["val/fer"]


def test_bit_assignment_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    system = tiny_system()
    names = system.workload().names
    assignment = BitAssignment({name: 4 for name in names})
    system.apply_bit_assignment(assignment)
    trainer = quiet_trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(system, datamodule=TinyDataModule())
    path = tmp_path / "q.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=False)[BIT_ASSIGNMENT_KEY] == assignment.to_dict()
    restored = AcousticSystem.load_from_checkpoint(path)
    assert restored.bit_assignment == assignment


def test_checkpoint_of_another_architecture_is_rejected_with_the_differences(
    tmp_path: Path,
) -> None:
    system = tiny_system(hidden_size=16)
    trainer = quiet_trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(system, datamodule=TinyDataModule())
    path = tmp_path / "float.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(CheckpointMismatchError, match="hidden_size: checkpoint 16, config 12"):
        load_model_weights(tiny_system(hidden_size=12), path)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_model_weights(tiny_system(), tmp_path / "missing.ckpt")
    loaded = tiny_system()
    load_model_weights(loaded, path)
    loaded_state = loaded.state_dict()
    for name, tensor in system.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, loaded_state[name]), name
