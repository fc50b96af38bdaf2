"""QuantizationAwareTraining on a user's own LightningModule converted by make_quantizable."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mohaq.callbacks.qat import QuantizationAwareTraining
from mohaq.convert import make_quantizable, model_workload
from mohaq.quant import BitAssignment, current_bit_assignment, quantizers


class Tagger(pl.LightningModule):
    """A user's model: an LSTM over frames and a linear classifier on its last state."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[1][0][-1])

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Frames(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.randn(24, 6, 3, generator=generator),
                                  torch.randint(2, (24,), generator=generator))  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=8)

    def optimization_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=1)


def test_qat_quantizes_a_converted_user_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = make_quantizable(Tagger(), granularity="operator")
    names = model_workload(model).names
    callback = QuantizationAwareTraining(uniform_bits=6, calibration_utterances=5)
    trainer = pl.Trainer(max_steps=2, callbacks=[callback], logger=False,
                         enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    before = model.lstm.layers[0].weight.detach().clone()
    trainer.fit(model, Frames())
    assert current_bit_assignment(model) == BitAssignment.uniform(names, 6)
    assert quantizers(model)["lstm.c"].num_observed == 5  # calibrated in float, 5 clips
    assert not torch.equal(model.lstm.layers[0].weight, before)  # trained through the quantizers


def test_qat_refuses_an_unconverted_user_model(tmp_path) -> None:
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                         callbacks=[QuantizationAwareTraining(uniform_bits=8)],
                         default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(TypeError, match="converted by mohaq.convert.make_quantizable"):
        trainer.fit(Tagger(), Frames())


class FramesWithoutOptimizationSplit(Frames):
    """A user's DataModule with only the usual loaders."""

    optimization_dataloader = None  # type: ignore[assignment]

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=4)


def test_qat_calibrates_on_a_validation_subset_without_an_optimization_split(tmp_path) -> None:
    torch.manual_seed(0)
    model = make_quantizable(Tagger(), granularity="operator")
    callback = QuantizationAwareTraining(uniform_bits=6, calibration_utterances=8)
    trainer = pl.Trainer(max_steps=1, callbacks=[callback], logger=False, limit_val_batches=0,
                         enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, FramesWithoutOptimizationSplit())
    # 8 validation clips in the validation loader's batches of 4 (one histogram per
    # batch), as the search's metric evaluator falls back to; without it: none.
    assert quantizers(model)["lstm.c"].num_observed == 2
