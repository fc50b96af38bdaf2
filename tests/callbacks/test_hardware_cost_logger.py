from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from mohaq.callbacks.hardware_cost_logger import HardwareCostLogger
from mohaq.hardware import PlatformError
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload


class TinyQuantModule(pl.LightningModule):
    """A linear model exposing a 2-layer workload and a settable bit assignment."""

    def __init__(self, assignment: BitAssignment) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.bit_assignment = assignment

    def workload(self) -> Workload:
        return Workload(
            (
                QuantPoint("l0.input", "activation", "l0"),
                QuantPoint("l0.weight", "weight", "l0", 32, 32, 4, 8, "l0.input"),
                QuantPoint("l1.input", "activation", "l1"),
                QuantPoint("l1.weight", "weight", "l1", 512, 512, 8, 64, "l1.input"),
            ),
            fixed_params=10,
        )

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _run(
    tmp_path: Path, assignment: BitAssignment, callback: HardwareCostLogger
) -> EventAccumulator:
    loader = DataLoader(TensorDataset(torch.randn(4, 4)), batch_size=2)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(TinyQuantModule(assignment), loader, loader)
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_logs_scalars_and_tables(tmp_path: Path) -> None:
    assignment = BitAssignment({"l0.weight": 8, "l0.input": 8, "l1.weight": 4, "l1.input": 4})
    events = _run(tmp_path, assignment, HardwareCostLogger())
    scalars = events.Tags()["scalars"]
    speedup = events.Scalars("hardware/silago/speedup")
    # time: 32 MACs / 2 + 512 / 4 = 144 units against 544 at 16 bits; logged at step 2
    assert speedup[-1].value == pytest.approx(544 / 144)
    assert speedup[-1].step == 2
    # MOHAQ's MAC-weighted mean: (32 x 2 + 512 x 4) / 544
    assert events.Scalars("hardware/silago/speedup_mohaq")[-1].value == pytest.approx(2112 / 544)
    assert "hardware/bitfusion/latency_cycles" in scalars
    assert "hardware/bitfusion/energy" in scalars
    texts = events.Tags()["tensors"]
    assert "hardware/silago/text_summary" in texts
    table = events.Tensors("hardware/silago/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| layer | weight | input |" in table


def test_float_model_logs_nothing_and_infeasible_logs_text(tmp_path: Path) -> None:
    events = _run(tmp_path / "float", BitAssignment(), HardwareCostLogger(platforms=["silago"]))
    assert not [t for t in events.Tags()["scalars"] if t.startswith("hardware/")]
    two_bits = BitAssignment({"l0.weight": 2, "l0.input": 2, "l1.weight": 2, "l1.input": 2})
    events = _run(tmp_path / "two", two_bits, HardwareCostLogger(platforms=["silago", "size"]))
    scalars = events.Tags()["scalars"]
    assert not [t for t in scalars if t.startswith("hardware/silago/")]
    assert "hardware/size/memory_bytes" in scalars
    text = events.Tensors("hardware/silago/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "2 bits not allowed on silago" in text


def test_init_validates_platforms() -> None:
    with pytest.raises(
        PlatformError, match="unknown platform 'tpu'.*registered cost models: bismo"
    ):
        HardwareCostLogger(platforms=["silago", "tpu"])
    with pytest.raises(ValueError, match="at least one platform"):
        HardwareCostLogger(platforms=[])
    with pytest.raises(ValueError, match="repeat a name"):
        HardwareCostLogger(platforms=["silago", "silago"])
    assert HardwareCostLogger().platforms == ["silago", "bitfusion"]
