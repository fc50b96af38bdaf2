"""Stops a training run that diverges, before it saves a checkpoint of it.

Without it, a run whose learning rate is far too large ends "successfully"
with a loss of 1e14 and a checkpoint called ``best`` (the error rate of a
broken model is still a number), or dies much later somewhere unrelated once
the loss is inf. :class:`DivergenceDetector` raises
:class:`TrainingDivergedError` as soon as:

* the training loss is not finite (inf or nan);
* a gradient is not finite, before the optimizer steps with it (skipped under a
  mixed-precision gradient scaler, which skips such steps by design);
* the training loss exceeds ``max_loss_ratio`` times the loss of the run's
  first step;
* a metric logged in validation is not finite.

The checks run before Lightning's checkpoint callbacks (which Lightning always
calls last), so no checkpoint, "best" or otherwise, is written from the step
or validation that diverged, and a ``ModelCheckpoint(save_on_exception=True)``
is kept from saving the diverged state. Checkpoints saved before hold weights
from before the divergence. The error ends ``Trainer.fit`` (and ``mohaq fit``
with a non-zero exit status).
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.precision import MixedPrecision
from pytorch_lightning.trainer.states import TrainerFn
from typing_extensions import override

#: Default bound on the training loss as a multiple of its first value.
DEFAULT_MAX_LOSS_RATIO = 100.0

_ADVICE = (
    "lower the learning rate, clip gradients (Trainer gradient_clip_val) or, if the loss may "
    "legitimately grow this much, raise the detector's max_loss_ratio"
)


class TrainingDivergedError(RuntimeError):
    """Training diverged (non-finite loss or gradient, or a loss far above its start).

    Attributes:
        reason: what was seen.
        epoch: the epoch it was seen in.
        step: the global step.
    """

    def __init__(self, reason: str, *, epoch: int, step: int) -> None:
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: {reason}. No checkpoint was saved "
            f"from it (checkpoints saved before hold weights from before it); {_ADVICE}"
        )
        self.reason, self.epoch, self.step = reason, epoch, step


class DivergenceDetector(Callback):
    """Raises :class:`TrainingDivergedError` when training diverges (see the module docstring).

    Args:
        max_loss_ratio: stop when the training loss exceeds this multiple of the
            loss at the run's first step; None: only non-finite values stop.
        check_gradients: stop on a non-finite gradient before the optimizer step.
        check_validation: stop when a metric logged in validation is not finite.

    Raises:
        ValueError: for a ``max_loss_ratio`` that is not a number > 1.
    """

    def __init__(
        self,
        max_loss_ratio: float | None = DEFAULT_MAX_LOSS_RATIO,
        check_gradients: bool = True,
        check_validation: bool = True,
    ) -> None:
        super().__init__()
        if max_loss_ratio is not None and not (
            isinstance(max_loss_ratio, int | float)
            and max_loss_ratio > 1
            and math.isfinite(max_loss_ratio)
        ):
            raise ValueError(
                f"DivergenceDetector: max_loss_ratio must be a finite number > 1 or None, "
                f"got {max_loss_ratio!r}"
            )
        self.max_loss_ratio = None if max_loss_ratio is None else float(max_loss_ratio)
        self.check_gradients = check_gradients
        self.check_validation = check_validation
        self.start_loss: float | None = None

    def _diverged(self, trainer: pl.Trainer, reason: str) -> TrainingDivergedError:
        return TrainingDivergedError(reason, epoch=trainer.current_epoch, step=trainer.global_step)

    @override
    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        # Before backward: the diverged loss never reaches the weights.
        value = float(loss.detach())
        if not math.isfinite(value):
            raise self._diverged(trainer, f"the training loss is {value}")
        if self.start_loss is None:
            self.start_loss = value
            return
        if self.max_loss_ratio is not None and value > self.max_loss_ratio * abs(self.start_loss):
            raise self._diverged(
                trainer,
                f"the training loss {value:.4g} is above max_loss_ratio={self.max_loss_ratio:g} "
                f"times its start {self.start_loss:.4g}",
            )

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if not self.check_gradients:
            return
        plugin = trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.scaler is not None:
            return  # the scaler skips steps with inf gradients by design
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        # One reduction and one device sync per step (torch>=2.1 has no get_total_norm).
        norms = torch.stack([torch.linalg.vector_norm(g.detach()).float() for g in grads])
        if torch.isfinite(norms).all():
            return
        norm = norms.norm()
        bad = next(
            (n for n, p in pl_module.named_parameters()
             if p.grad is not None and not torch.isfinite(p.grad).all()),
            None,
        )  # fmt: skip
        where = (
            f"the gradient of {bad} is not finite" if bad else f"the gradient norm is {float(norm)}"
        )
        raise self._diverged(trainer, where)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.check_validation or trainer.state.fn != TrainerFn.FITTING:
            return  # `validate` alone trains nothing: it reports what it measured
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                number = float(value)
                if not math.isfinite(number):
                    raise self._diverged(trainer, f"the validation metric {name} is {number}")

    @override
    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, TrainingDivergedError):
            return
        # Lightning calls checkpoint callbacks after this one: keep them from
        # saving the diverged state under their (possibly "best") file name.
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                callback.save_on_exception = False

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"start_loss": self.start_loss}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.start_loss = state_dict.get("start_loss", self.start_loss)
