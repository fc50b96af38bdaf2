"""DivergenceDetector: a diverging run stops at the step it diverges, with a
clear error, and leaves no checkpoint of the diverged state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from mohaq.callbacks.divergence import DivergenceDetector, TrainingDivergedError


class Regression(pl.LightningModule):
    """y = 3x by Adam; ``losses`` (step -> value) replaces the training loss's
    value (keeping its gradient), ``bad_grad_step`` poisons a gradient,
    ``val_value`` replaces the validation loss."""

    def __init__(
        self,
        lr: float = 0.05,
        losses: dict[int, float] | None = None,
        bad_grad_step: int | None = None,
        val_value: float | None = None,
    ) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.lr, self.losses, self.bad_grad_step, self.val_value = (
            lr,
            losses or {},
            bad_grad_step,
            val_value,
        )

    def _loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return ((self.weight * x - y) ** 2).mean()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        if self.global_step in self.losses:
            loss = loss - loss.detach() + self.losses[self.global_step]
        return loss

    def on_after_backward(self) -> None:
        if self.global_step == self.bad_grad_step:
            self.weight.grad.fill_(math.inf)

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val_loss", loss if self.val_value is None else torch.tensor(self.val_value))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def data() -> DataLoader:
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    return DataLoader(TensorDataset(x, 3 * x), batch_size=4)


def fit(tmp_path: Path, module: Regression, detector: DivergenceDetector, epochs: int = 2) -> Path:
    checkpoints = tmp_path / "checkpoints"
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), num_sanity_val_steps=0,
        callbacks=[
            ModelCheckpoint(dirpath=checkpoints, filename="best", monitor="val_loss",
                            save_last=True, save_on_exception=True),
            detector,
        ],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data(), val_dataloaders=data())
    return checkpoints


def test_a_healthy_run_is_untouched(tmp_path: Path) -> None:
    detector = DivergenceDetector()
    checkpoints = fit(tmp_path, Regression(), detector)
    assert (checkpoints / "best.ckpt").is_file()
    assert detector.start_loss == pytest.approx(((3 * torch.linspace(-1, 1, 32)[:4]) ** 2).mean())


def test_a_huge_learning_rate_stops_at_the_second_step_without_any_checkpoint(
    tmp_path: Path,
) -> None:
    with pytest.raises(TrainingDivergedError, match="epoch 0, step 1: the training loss .* is above max_loss_ratio=100 times its start") as caught:  # fmt: skip
        fit(tmp_path, Regression(lr=1e12), DivergenceDetector())
    assert caught.value.step == 1 and "lower the learning rate" in str(caught.value)
    # Not "best", not "last", not the save-on-exception copy.
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_non_finite_loss_stops_at_its_step(tmp_path: Path, value: float) -> None:
    module = Regression(losses={5: value})
    with pytest.raises(TrainingDivergedError, match=f"step 5: the training loss is {value}"):
        fit(tmp_path, module, DivergenceDetector(max_loss_ratio=None))


def test_a_loss_above_the_ratio_stops_but_below_it_does_not(tmp_path: Path) -> None:
    first = float(((3 * torch.linspace(-1, 1, 32)[:4]) ** 2).mean())
    fit(tmp_path / "below", Regression(losses={3: 9 * first}), DivergenceDetector(10), epochs=1)
    with pytest.raises(TrainingDivergedError, match="step 3: .*above max_loss_ratio=10 times"):
        fit(
            tmp_path / "above", Regression(losses={3: 11 * first}), DivergenceDetector(10), epochs=1
        )


def test_a_non_finite_gradient_stops_before_the_optimizer_uses_it(tmp_path: Path) -> None:
    module = Regression(bad_grad_step=2)
    with pytest.raises(TrainingDivergedError, match="step 2: the gradient of weight is not finite"):
        fit(tmp_path, module, DivergenceDetector())
    assert torch.isfinite(module.weight).all()  # the step was never taken


def test_a_non_finite_validation_metric_stops_before_best_is_saved(tmp_path: Path) -> None:
    with pytest.raises(TrainingDivergedError, match="the validation metric val_loss is nan"):
        fit(tmp_path, Regression(val_value=math.nan), DivergenceDetector())
    assert not (tmp_path / "checkpoints" / "best.ckpt").exists()


def test_validate_alone_reports_what_it_measures(tmp_path: Path) -> None:
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path), callbacks=[DivergenceDetector()],
    )  # fmt: skip
    (metrics,) = trainer.validate(Regression(val_value=math.nan), dataloaders=data())
    assert math.isnan(metrics["val_loss"])


def test_arguments_are_checked_and_the_start_survives_a_checkpoint() -> None:
    with pytest.raises(
        ValueError, match="max_loss_ratio must be a finite number > 1 or None, got 0.5"
    ):
        DivergenceDetector(max_loss_ratio=0.5)
    detector = DivergenceDetector()
    detector.start_loss = 2.5
    restored = DivergenceDetector()
    restored.load_state_dict(detector.state_dict())
    assert restored.start_loss == 2.5
