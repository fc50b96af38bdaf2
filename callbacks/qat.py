"""Quantization-aware training as a Lightning callback.

Lightning 2.x has no QAT callback of its own. This one turns fake quantization
on with a given bit assignment before any fit/validate/test work starts (the
optimizer is built after `setup`, so the quantizers exist when it is), and
keeps the assignment in checkpoints so a resumed or reloaded run quantizes the
same way.

It serves the toolkit's systems and a user's model converted by
:func:`mohaq.convert.make_quantizable` alike (:mod:`mohaq.convert.model_api`):
convert before ``fit``, so the optimizer holds the quantizable layers' parameters.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from mohaq.checkpoints import load_model_weights
from mohaq.convert.model_api import apply_assignment, assignment_of, forward_batch, workload_of
from mohaq.quant.assignment import MAX_BITS, MIN_BITS, BitAssignment
from mohaq.quant.calibration import calibrate_activations


def describe_assignment(assignment: BitAssignment, fixed_bits: int | None = 16) -> str:
    """One line: how many points at which precisions, e.g. ``quantized 12 points: 4 bits``."""
    counts: dict[int, int] = {}
    for bits in assignment.bits.values():
        counts[bits] = counts.get(bits, 0) + 1
    shown = ", ".join(f"{n} at {b} bits" for b, n in sorted(counts.items()))
    if len(counts) == 1:
        shown = f"{next(iter(counts))} bits"
    fixed = (
        "" if fixed_bits is None else f" (biases, recurrent vectors and states: {fixed_bits} bits)"
    )
    return f"quantized {len(assignment)} points: {shown}{fixed}"


class QuantizationAwareTraining(Callback):
    """Applies a bit assignment with fake quantization for fit, validate and test.

    Args:
        bits: point name -> bits; points not named stay in float.
        uniform_bits: every quantization point of the model at this precision
            (mutually exclusive with ``bits``).
        fixed_bits: precision of biases and element-wise recurrent vectors.
        calibrate: calibrate activation thresholds on the DataModule's
            optimization set (in float) before quantization is switched on.
        calibration_utterances: how many optimization-set utterances to use.
        init_checkpoint: start from this checkpoint's model weights (e.g. the
            float model a QAT fine-tuning starts from), without its trainer state.

    Raises:
        ValueError: if neither or both of ``bits`` and ``uniform_bits`` are given,
            or a value is out of range.
    """

    def __init__(
        self,
        bits: Mapping[str, int] | None = None,
        uniform_bits: int | None = None,
        fixed_bits: int | None = 16,
        calibrate: bool = True,
        calibration_utterances: int = 64,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if (bits is None) == (uniform_bits is None):
            raise ValueError(
                "QuantizationAwareTraining needs exactly one of `bits` (point -> bits) "
                f"or `uniform_bits`; got bits={bits!r}, uniform_bits={uniform_bits!r}"
            )
        if uniform_bits is not None and not MIN_BITS <= uniform_bits <= MAX_BITS:
            raise ValueError(
                f"uniform_bits must be in [{MIN_BITS}, {MAX_BITS}], got {uniform_bits}"
            )
        if calibration_utterances < 1:
            raise ValueError(f"calibration_utterances must be >= 1, got {calibration_utterances}")
        self.requested_bits = BitAssignment(dict(bits)) if bits is not None else None
        self.uniform_bits = uniform_bits
        self.fixed_bits = fixed_bits
        self.calibrate = calibrate
        self.calibration_utterances = calibration_utterances
        self.assignment: BitAssignment | None = None
        self.init_checkpoint = init_checkpoint
        self._calibrated = False
        self._initialized = False

    def resolve(self, pl_module: pl.LightningModule) -> BitAssignment:
        """The assignment for this model, validated against its quantization points."""
        try:
            workload = workload_of(pl_module)
        except ValueError as error:  # a user's model that was not converted
            raise TypeError(
                f"{type(pl_module).__name__} has no quantization points; QuantizationAwareTraining "
                "needs a quantizable module such as mohaq.system.AcousticSystem or a model "
                "converted by mohaq.convert.make_quantizable"
            ) from error
        if self.requested_bits is not None:
            assignment = self.requested_bits
        else:
            assignment = BitAssignment.uniform(workload.names, self.uniform_bits)
        assignment.validate_for(workload)
        return assignment

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Validate now, before any long work; quantization itself is switched on
        # once the weights are final (after a `ckpt_path` restore), in on_*_start.
        self.assignment = self.resolve(pl_module)
        if self.init_checkpoint is not None and not self._initialized:
            load_model_weights(pl_module, self.init_checkpoint)
            self._initialized = True

    def _calibration_loader(self, datamodule: Any) -> Any:
        """The optimization set: the DataModule's ``optimization_dataloader()``,
        else (a user's DataModule without that hook) a fixed subset of its
        validation set, as the metric evaluator of the search falls back to."""
        if datamodule is None:
            return None
        hook = getattr(datamodule, "optimization_dataloader", None)
        if callable(hook):
            return hook()
        if not callable(getattr(datamodule, "val_dataloader", None)):
            return None
        from mohaq.search.metric_evaluator import validation_subset_loader

        return validation_subset_loader(datamodule, self.calibration_utterances, seed=0)

    def _quantize(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.assignment is not None, "setup() resolves the assignment first"
        loader = self._calibration_loader(trainer.datamodule)
        if self.calibrate and not self._calibrated and loader is not None:
            # Thresholds come from the float model, as post-training calibration does.
            apply_assignment(pl_module, BitAssignment())
            started = time.perf_counter()
            rank_zero_info(
                f"QuantizationAwareTraining: calibrating activation ranges (float model) on up "
                f"to {self.calibration_utterances} utterances of the optimization set"
            )
            count = calibrate_activations(
                pl_module,
                loader,
                forward_batch,
                max_utterances=self.calibration_utterances,
            )
            rank_zero_info(
                f"QuantizationAwareTraining: calibrated on {count} utterances in "
                f"{time.perf_counter() - started:.1f} s"
            )
            self._calibrated = True
        apply_assignment(pl_module, self.assignment, fixed_bits=self.fixed_bits)
        rank_zero_info(
            "QuantizationAwareTraining: " + describe_assignment(self.assignment, self.fixed_bits)
        )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._quantize(trainer, pl_module)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if assignment_of(pl_module) != self.assignment:
            self._quantize(trainer, pl_module)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if assignment_of(pl_module) != self.assignment:
            self._quantize(trainer, pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "bits": self.assignment.to_dict() if self.assignment is not None else None,
            "fixed_bits": self.fixed_bits,
            "calibrated": self._calibrated,
            "initialized": self._initialized,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("bits") is not None:
            self.requested_bits = BitAssignment.from_dict(state_dict["bits"])
            self.uniform_bits = None
        self.fixed_bits = state_dict.get("fixed_bits", self.fixed_bits)
        # The checkpoint's module state carries the calibration: do not redo it.
        self._calibrated = bool(state_dict.get("calibrated", False))
        self._initialized = bool(state_dict.get("initialized", False))
