"""Evaluators: bit assignment -> error.

:class:`PTQEvaluator` is the inference-only stage of MOHAQ: the float model's
activation quantizers are calibrated once on the optimization set (one
utterance per forward, median per-utterance thresholds), then each candidate
is applied by post-training quantization and scored (PER) on the optimization
set, pre-loaded in memory and re-batched into padded batches. Final Pareto
solutions are re-scored on the test set with ``split="test"``.

Worker processes build their own evaluator from a picklable
:class:`PTQEvaluatorSpec` (checkpoint path + DataModule class and arguments);
see :mod:`mohaq.search.workers`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.ptq import PostTrainingQuantizer, PTQConfig

OPTIMIZATION = "optimization"
TEST = "test"
SPLITS = (OPTIMIZATION, TEST)
IGNORE_INDEX = -100


class Evaluator(Protocol):
    """Scores bit assignments. ``name`` is recorded with every evaluation."""

    name: str

    def evaluate(self, assignment: BitAssignment, split: str = OPTIMIZATION) -> float: ...


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class AnalyticEvaluator:
    """A stand-in evaluator with a closed-form error, for dry runs of the search
    machinery (tests, benchmarks of controller overhead): error =
    ``scale * mean(1 / bits)`` (+ ``test_offset`` on the test split).

    Picklable, so it also exercises the worker-process path.
    """

    name = "analytic"

    def __init__(
        self, scale: float = 1.0, test_offset: float = 0.01, fail_after: int | None = None
    ) -> None:
        self.scale = scale
        self.test_offset = test_offset
        self.fail_after = fail_after
        self.calls = 0

    def evaluate(self, assignment: BitAssignment, split: str = OPTIMIZATION) -> float:
        _check_split(split)
        if split == OPTIMIZATION:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise RuntimeError(f"simulated crash after {self.calls} evaluations")
            self.calls += 1
        bits = list(assignment.bits.values())
        error = self.scale * sum(1.0 / b for b in bits) / len(bits)
        return error + (self.test_offset if split == TEST else 0.0)


def _forward(model: torch.nn.Module, batch: Sequence[Tensor]) -> Tensor:
    return model(batch[0], batch[2])


def _to_device(batch: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(t.to(device) for t in (batch[0], batch[1], batch[2]))  # type: ignore[return-value]


def rebatch(
    singles: Sequence[Sequence[Tensor]], batch_size: int
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Pads single-utterance batches ``(features [1,T,F], targets [1,T], lengths [1])``
    into batches of ``batch_size`` utterances of similar length."""
    items = []
    for batch in singles:
        length = int(batch[2][0])
        items.append((batch[0][0, :length], batch[1][0, :length]))
    order = sorted(range(len(items)), key=lambda i: items[i][0].shape[0])
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [items[i] for i in order[start : start + batch_size]]
        features = torch.nn.utils.rnn.pad_sequence([f for f, _ in chunk], batch_first=True)
        targets = torch.nn.utils.rnn.pad_sequence(
            [t for _, t in chunk], batch_first=True, padding_value=IGNORE_INDEX
        )
        lengths = torch.tensor([f.shape[0] for f, _ in chunk])
        batches.append((features, targets, lengths))
    return batches


class PTQEvaluator:
    """Post-training quantization of a float :class:`~mohaq.system.AcousticSystem`.

    Args:
        system: the float model (loaded from its checkpoint).
        datamodule: provides ``optimization_dataloader(batch_size)`` and
            ``test_dataloader()``; ``prepare_data`` and ``setup`` are called here.
        batch_size: utterances per padded batch when scoring (1 reproduces the
            per-utterance forward exactly; the model must mask by ``lengths``
            for larger batches to give the same error).
        device: where to run (default: CUDA if available, else CPU).
        max_calibration_utterances: calibrate on at most this many utterances
            (used when ``ptq.calibration_utterances`` is None).
        fixed_bits: precision of biases and element-wise recurrent vectors.
        ptq: the post-training quantization methods
            (:class:`mohaq.quant.ptq.PTQConfig`; default: MOHAQ's recipe).

    Raises:
        ValueError: if ``batch_size`` is below 1 or the optimization set is empty.
        PTQConfigError: if ``ptq`` cannot be applied to the model.
    """

    name = "ptq"

    def __init__(
        self,
        system: Any,
        datamodule: Any,
        *,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        max_calibration_utterances: int | None = None,
        fixed_bits: int = 16,
        ptq: PTQConfig | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        from mohaq.phone_error import PhoneErrorRate

        ptq = ptq if ptq is not None else PTQConfig()
        if ptq.calibration_utterances is None and max_calibration_utterances is not None:
            ptq = replace(ptq, calibration_utterances=max_calibration_utterances)

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.system = system.to(self.device).eval()
        self.datamodule = datamodule
        self.fixed_bits = fixed_bits
        datamodule.prepare_data()
        datamodule.setup("validate")
        singles = [
            _to_device(b, self.device) for b in datamodule.optimization_dataloader(batch_size=1)
        ]
        if not singles:
            raise ValueError("the optimization set is empty")
        self.num_utterances = len(singles)
        # The output-aware search scores its candidates on one padded batch.
        scoring = rebatch(singles[: ptq.output_aware_utterances], ptq.output_aware_utterances)
        self.ptq = PostTrainingQuantizer(
            self.system, ptq, singles, _forward, scoring_batches=scoring
        )
        self._batches = {OPTIMIZATION: rebatch(singles, batch_size)}
        scoring_map = self.system.scoring_map.detach().cpu()
        self._metric = PhoneErrorRate(scoring_map, IGNORE_INDEX)

    def _split_batches(self, split: str) -> list[tuple[Tensor, Tensor, Tensor]]:
        if split not in self._batches:
            self.datamodule.setup("test")
            self._batches[split] = [
                _to_device(b, self.device) for b in self.datamodule.test_dataloader()
            ]
        return self._batches[split]

    @torch.no_grad()
    def evaluate(self, assignment: BitAssignment, split: str = OPTIMIZATION) -> float:
        """PER of ``assignment`` on ``split`` (``"optimization"`` or ``"test"``)."""
        _check_split(split)
        self.ptq.apply(assignment, fixed_bits=self.fixed_bits)
        self.system.eval()
        self._metric.reset()
        for features, targets, lengths in self._split_batches(split):
            logits = self.system(features, lengths)
            self._metric.update(logits.cpu(), targets.cpu())
        return float(self._metric.compute())

    def describe(self) -> dict[str, Any]:
        """The post-training quantization settings and calibration facts, JSON-ready."""
        return self.ptq.describe()


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class PTQEvaluatorSpec:
    """How a worker process builds its own :class:`PTQEvaluator`.

    Attributes:
        checkpoint_path: the float checkpoint (``AcousticSystem.load_from_checkpoint``).
        datamodule_class: import path, e.g. ``"mohaq.datamodules.timit.TIMITDataModule"``.
        datamodule_kwargs: its init arguments (``datamodule.hparams`` of the parent's).
        evaluator_kwargs: extra :class:`PTQEvaluator` arguments (batch_size, ...).
        system_class: import path of the LightningModule class.
    """

    checkpoint_path: str
    datamodule_class: str
    datamodule_kwargs: Mapping[str, Any] = field(default_factory=dict)
    evaluator_kwargs: Mapping[str, Any] = field(default_factory=dict)
    system_class: str = "mohaq.system.AcousticSystem"
    evaluator_name = "ptq"

    @classmethod
    def from_objects(
        cls,
        checkpoint_path: str,
        datamodule: Any,
        system: Any | None = None,
        **evaluator_kwargs: Any,
    ) -> PTQEvaluatorSpec:
        """A spec rebuilding ``datamodule`` from its saved hyperparameters."""
        kwargs = dict(getattr(datamodule, "hparams", {}) or {})
        klass = type(datamodule)
        system_class = (
            f"{type(system).__module__}.{type(system).__qualname__}"
            if system is not None
            else cls.system_class
        )
        return cls(
            str(checkpoint_path),
            f"{klass.__module__}.{klass.__qualname__}",
            kwargs,
            dict(evaluator_kwargs),
            system_class,
        )

    def __call__(self) -> PTQEvaluator:
        system = _import(self.system_class).load_from_checkpoint(
            self.checkpoint_path, map_location="cpu"
        )
        datamodule = _import(self.datamodule_class)(**dict(self.datamodule_kwargs))
        return PTQEvaluator(system, datamodule, **dict(self.evaluator_kwargs))


@dataclass(frozen=True)
class EvaluatorInstance:
    """A factory returning an already built (picklable) evaluator, for tests and
    the analytic evaluator."""

    evaluator: Any

    @property
    def evaluator_name(self) -> str:
        return str(getattr(self.evaluator, "name", "ptq"))

    def __call__(self) -> Any:
        return self.evaluator
