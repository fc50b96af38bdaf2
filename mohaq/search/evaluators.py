"""Evaluators: bit assignment -> typed result.

An evaluator scores a :class:`~mohaq.quant.assignment.BitAssignment` on a
split (``"optimization"`` during the search, ``"test"`` when the final front
is re-scored) and returns an :class:`EvaluationResult`: the error, the share
of the split it was measured on (fidelity), which evaluator scored it (e.g.
``"beacon:b000"``) and extras that go into the record.

* :class:`PTQEvaluator` is the inference-only stage of MOHAQ: the float
  model's activation quantizers are calibrated once on the optimization set
  (one utterance per forward, median per-utterance thresholds), then each
  candidate is applied by post-training quantization and scored (PER) on the
  optimization set, held in memory and re-batched into padded batches.
* :class:`AnalyticEvaluator` has a closed-form error, for dry runs of the
  search machinery and the controller benchmark.

Worker processes build their own evaluator from a picklable factory such as
:class:`PTQEvaluatorSpec` (checkpoint path + DataModule class and arguments);
see :mod:`mohaq.search.executors`.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.ptq import PTQConfig

log = logging.getLogger(__name__)

OPTIMIZATION = "optimization"
TEST = "test"
SPLITS = (OPTIMIZATION, TEST)
IGNORE_INDEX = -100


class EvaluatorError(ValueError):
    """An evaluator that cannot be built or asked what it was asked."""


@dataclass(frozen=True)
class EvaluationResult:
    """What an evaluator says about one assignment.

    Attributes:
        error: the error rate (a fraction; PER for the acoustic model).
        fidelity: the share of the split it was measured on (1.0: all of it).
        evaluator: which evaluator scored it (``"ptq"``, ``"beacon:b000"``, ...).
        extras: other per-evaluation values stored with the record (e.g. the
            beacon stage's inference-only error and beacon distance).
        method: the quantization method that produced the error (for PTQ,
            :meth:`mohaq.quant.ptq.PTQConfig.tag`, e.g. ``"best"``); empty
            for evaluators without one.
    """

    error: float
    fidelity: float = 1.0
    evaluator: str = "ptq"
    extras: Mapping[str, float] = field(default_factory=dict)
    method: str = ""


@runtime_checkable
class Evaluator(Protocol):
    """Scores bit assignments; ``name`` names it in records.

    ``stop_above``: the search's multi-fidelity hint: an evaluator may stop
    early, returning its estimate and the fidelity it reached, once it is
    confident that the error exceeds this value (the candidate is then
    dominated by the front); evaluators that cannot ignore it.
    """

    name: str

    def evaluate(
        self,
        assignment: BitAssignment,
        split: str = OPTIMIZATION,
        *,
        stop_above: float | None = None,
    ) -> EvaluationResult: ...


@dataclass(frozen=True)
class Racing:
    """Multi-fidelity evaluation: score a candidate on a growing share of the
    optimization set (utterances in one fixed random order) and stop at a
    checkpoint once the full-set error is confidently above ``stop_above``.

    The bound: at each checkpoint the full-set PER is estimated by the ratio
    estimator (errors / reference phones over the utterances seen) with its
    finite-population-corrected variance; the evaluation stops when the lower
    ``confidence`` bound (normal approximation) is above ``stop_above``. Per
    checkpoint, a candidate whose full-set error is at or below ``stop_above``
    is stopped with probability at most ``1 - confidence``; over all
    checkpoints, at most ``len(fractions) * (1 - confidence)``.

    Attributes:
        fractions: the shares of the set at which to check, increasing, in (0, 1).
        confidence: the one-sided confidence of the bound.
        seed: the seed of the utterance order.
    """

    fractions: tuple[float, ...] = (0.25, 0.5)
    confidence: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = tuple(float(f) for f in self.fractions)
        increasing = list(fractions) == sorted(set(fractions))
        if not fractions or not increasing or any(not 0 < f < 1 for f in fractions):
            raise EvaluatorError(
                f"racing fractions must be increasing shares in (0, 1), got {list(self.fractions)}"
            )
        if not 0.5 < self.confidence < 1:
            raise EvaluatorError(f"racing confidence must be in (0.5, 1), got {self.confidence!r}")
        object.__setattr__(self, "fractions", fractions)

    def lower_bound(
        self, counts: Sequence[tuple[int, int]], population: int
    ) -> tuple[float, float]:
        """(ratio estimate, its lower confidence bound) from per-utterance
        ``(errors, reference phones)`` of a random sample of ``population`` utterances."""
        from scipy.stats import norm

        errors = np.asarray([e for e, _ in counts], dtype=float)
        tokens = np.asarray([n for _, n in counts], dtype=float)
        estimate = float(errors.sum() / tokens.sum())
        m = len(counts)
        if m < 2:
            return estimate, -math.inf
        residuals = errors - estimate * tokens
        variance = (1 - m / population) * residuals.var(ddof=1) / (m * tokens.mean() ** 2)
        return estimate, estimate - float(norm.ppf(self.confidence)) * math.sqrt(variance)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise EvaluatorError(f"split must be one of {SPLITS}, got {split!r}")


class AnalyticEvaluator:
    """A stand-in with a closed-form error, for dry runs of the search machinery
    (tests, benchmarks of controller overhead): error = ``scale * mean(1 / bits)``
    (+ ``test_offset`` on the test split).

    Picklable, so it also exercises the worker-process paths.

    Args:
        scale: the error of 1-bit precision everywhere.
        test_offset: added on the test split.
        fail_after: raise after this many optimization-set evaluations (crash tests).
    """

    name = "analytic"

    def __init__(
        self, scale: float = 1.0, test_offset: float = 0.01, fail_after: int | None = None
    ) -> None:
        self.scale = scale
        self.test_offset = test_offset
        self.fail_after = fail_after
        self.calls = 0

    def error_of(self, assignment: BitAssignment) -> float:
        bits = list(assignment.bits.values())
        return self.scale * sum(1.0 / b for b in bits) / len(bits)

    def evaluate(
        self,
        assignment: BitAssignment,
        split: str = OPTIMIZATION,
        *,
        stop_above: float | None = None,
    ) -> EvaluationResult:
        check_split(split)
        if split == OPTIMIZATION:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise RuntimeError(f"simulated crash after {self.calls} evaluations")
            self.calls += 1
        error = self.error_of(assignment) + (self.test_offset if split == TEST else 0.0)
        return EvaluationResult(error, evaluator=self.name)


def _forward(model: torch.nn.Module, batch: Sequence[Tensor]) -> Tensor:
    return model(batch[0], batch[2])


def _to_device(batch: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(t.to(device) for t in (batch[0], batch[1], batch[2]))  # type: ignore[return-value]


Stage = tuple[tuple[str, ...], Any]


class PrefixCache:
    """Activations after each stage of a model, per batch, reused by
    candidates that share the bits of the first stages' points.

    A stage's output is a function of the batch, the bits of its and the
    earlier stages' quantization points, the fixed precision and the model's
    parameters (their versions are in the key, so an in-place change, e.g.
    a training step or a bias correction, is a miss). The least recently used
    activations are dropped beyond ``max_bytes``.

    Args:
        stages: ``(points, run(x, lengths))`` in order (e.g.
            :meth:`mohaq.models.acoustic.AcousticModel.stages`).
        max_bytes: memory the cached activations may take.
    """

    def __init__(
        self, stages: Sequence[Stage], parameters: Sequence[Tensor], max_bytes: int
    ) -> None:
        self.stages = list(stages)
        self.parameters = list(parameters)
        self.max_bytes = max_bytes
        self._store: dict[tuple[Any, ...], Tensor] = {}
        self._bytes = 0
        self.hits = self.misses = 0

    def __call__(
        self,
        batch: int,
        features: Tensor,
        lengths: Tensor,
        bits: Mapping[str, int],
        fixed_bits: Any,
    ) -> Tensor:
        """The model's output on one batch (``batch`` identifies it) at ``bits``."""
        prefix: tuple[Any, ...] = (batch, fixed_bits, tuple(p._version for p in self.parameters))
        keys = []
        for points, _ in self.stages[:-1]:
            prefix = prefix + tuple(bits.get(point) for point in points)
            keys.append(prefix)
        start, x = 0, features
        for index in reversed(range(len(keys))):
            cached = self._store.pop(keys[index], None)
            if cached is not None:
                self._store[keys[index]] = cached  # most recently used last
                start, x = index + 1, cached
                break
        self.hits += start
        self.misses += len(keys) - start
        for index in range(start, len(self.stages)):
            x = self.stages[index][1](x, lengths)
            if index < len(keys):
                self._put(keys[index], x)
        return x

    def _put(self, key: tuple[Any, ...], value: Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        while self._store and self._bytes + size > self.max_bytes:
            old = self._store.pop(next(iter(self._store)))
            self._bytes -= old.numel() * old.element_size()
        self._store[key] = value
        self._bytes += size

    def clear(self) -> None:
        self._store.clear()
        self._bytes = 0


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
            per-utterance forward exactly; the model masks by ``lengths``, so
            larger batches give the same error).
        device: where to run (default: CUDA if available, else CPU).
        max_calibration_utterances: calibrate on at most this many utterances
            (used when ``ptq.calibration_utterances`` is None).
        fixed_bits: precision of biases, element-wise vectors and states.
        racing: multi-fidelity evaluation of the optimization set (None: every
            candidate on the whole set).
        ptq: the post-training quantization methods
            (:class:`mohaq.quant.ptq.PTQConfig`; default: MOHAQ's recipe).
        prefix_cache_mb: memory for activations reused by candidates that
            share the bits of the first layers (models with ``stages()``,
            e.g. the acoustic system; 0 turns it off).

    Raises:
        EvaluatorError: if ``batch_size`` is below 1 or the optimization set is empty.
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
        racing: Racing | None = None,
        ptq: PTQConfig | None = None,
        prefix_cache_mb: float = 256.0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EvaluatorError(f"batch_size must be a positive integer, got {batch_size!r}")
        from mohaq.phone_error import PhoneErrorRate
        from mohaq.quant.ptq import PostTrainingQuantizer

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
            raise EvaluatorError("the optimization set is empty")
        self.num_utterances = len(singles)
        started = time.perf_counter()
        log.info(
            "calibrating activation ranges on %d utterances of the optimization set",
            min(len(singles), ptq.calibration_utterances or len(singles)),
        )
        # The output-aware search scores its candidates on one padded batch.
        scoring = rebatch(singles[: ptq.output_aware_utterances], ptq.output_aware_utterances)
        self.ptq = PostTrainingQuantizer(
            self.system, ptq, singles, _forward, scoring_batches=scoring
        )
        self.method = ptq.tag()
        log.info("calibrated in %.1f s", time.perf_counter() - started)
        self._batches = {OPTIMIZATION: rebatch(singles, batch_size)}
        self.scoring_map = self.system.scoring_map.detach().cpu()
        self._metric = PhoneErrorRate(self.scoring_map, IGNORE_INDEX)
        self.racing = racing
        self.prefix_cache: PrefixCache | None = None
        stages = getattr(self.system, "stages", None)  # any model; the acoustic one has them
        if prefix_cache_mb > 0 and callable(stages):
            self.prefix_cache = PrefixCache(
                stages(), list(self.system.parameters()), int(prefix_cache_mb * 2**20)
            )
        self._assignment = BitAssignment()
        self._chunks: list[list[tuple[Tensor, Tensor, Tensor]]] = []
        if racing is not None:
            # One fixed random order of utterances, cut at the racing shares and
            # re-batched by length within each chunk.
            order = np.random.default_rng(racing.seed).permutation(len(singles))
            cuts = [math.ceil(f * len(singles)) for f in racing.fractions] + [len(singles)]
            start = 0
            for cut in cuts:
                if cut > start:
                    self._chunks.append(rebatch([singles[i] for i in order[start:cut]], batch_size))
                start = max(start, cut)

    def _split_batches(self, split: str) -> list[tuple[Tensor, Tensor, Tensor]]:
        if split not in self._batches:
            self.datamodule.setup("test")
            self._batches[split] = [
                _to_device(b, self.device) for b in self.datamodule.test_dataloader()
            ]
        return self._batches[split]

    def _apply(self, assignment: BitAssignment) -> None:
        # Outside inference mode: the first use of a (point, bits) pair may learn
        # its rounding (AdaRound), which needs autograd.
        with torch.no_grad():
            self.ptq.apply(assignment, fixed_bits=self.fixed_bits)
        self.system.eval()
        self._assignment = assignment

    def _logits(self, batch: tuple[Tensor, Tensor, Tensor], split: str) -> Tensor:
        features, _, lengths = batch
        if self.prefix_cache is None or split != OPTIMIZATION:
            return self.system(features, lengths)
        # The batch tensors live as long as the evaluator: their identity names them.
        return self.prefix_cache(
            id(features), features, lengths, self._assignment.bits, self.fixed_bits
        )

    def error(self, assignment: BitAssignment, split: str = OPTIMIZATION) -> float:
        """PER of ``assignment`` on ``split`` (``"optimization"`` or ``"test"``)."""
        check_split(split)
        self._apply(assignment)
        self._metric.reset()
        with torch.inference_mode():
            for batch in self._split_batches(split):
                logits = self._logits(batch, split)
                self._metric.update(logits.cpu(), batch[1].cpu())
        return float(self._metric.compute())

    def _raced(self, assignment: BitAssignment, stop_above: float) -> EvaluationResult:
        self._apply(assignment)
        with torch.inference_mode():
            return self._raced_forward(stop_above)

    def _raced_forward(self, stop_above: float) -> EvaluationResult:
        from mohaq.phone_error import utterance_errors

        assert self.racing is not None
        counts: list[tuple[int, int]] = []
        for number, chunk in enumerate(self._chunks):
            for batch in chunk:
                logits = self._logits(batch, OPTIMIZATION)
                counts += utterance_errors(logits, batch[1], self.scoring_map, IGNORE_INDEX)
            seen = sum(len(b[2]) for c in self._chunks[: number + 1] for b in c)
            estimate, lower = self.racing.lower_bound(counts, self.num_utterances)
            if number < len(self._chunks) - 1 and lower > stop_above:
                return EvaluationResult(
                    estimate,
                    fidelity=seen / self.num_utterances,
                    evaluator=self.name,
                    method=self.method,
                )
        return EvaluationResult(estimate, evaluator=self.name, method=self.method)

    def describe(self) -> dict[str, Any]:
        """The post-training quantization settings and calibration facts, JSON-ready."""
        return self.ptq.describe()

    def evaluate(
        self,
        assignment: BitAssignment,
        split: str = OPTIMIZATION,
        *,
        stop_above: float | None = None,
    ) -> EvaluationResult:
        if split == OPTIMIZATION and stop_above is not None and self.racing is not None:
            return self._raced(assignment, stop_above)
        return EvaluationResult(
            self.error(assignment, split), evaluator=self.name, method=self.method
        )


def import_object(path: str) -> Any:
    """The object at a ``package.module.Name`` import path."""
    module, _, name = path.rpartition(".")
    if not module:
        raise EvaluatorError(f"{path!r} is not an import path such as 'package.module.Class'")
    return getattr(importlib.import_module(module), name)


def import_path(obj_or_class: Any) -> str:
    """The import path of an object's class (or of a class)."""
    klass = obj_or_class if isinstance(obj_or_class, type) else type(obj_or_class)
    return f"{klass.__module__}.{klass.__qualname__}"


def init_arguments(obj: Any) -> dict[str, Any]:
    """``obj.hparams`` without Lightning's private entries (LightningCLI adds
    ``_instantiator``, which no ``__init__`` accepts)."""
    hparams = dict(getattr(obj, "hparams", {}) or {})
    return {k: v for k, v in hparams.items() if not str(k).startswith("_")}


@dataclass(frozen=True)
class PTQEvaluatorSpec:
    """How a worker process builds its own :class:`PTQEvaluator`.

    Attributes:
        checkpoint_path: the float checkpoint (``load_from_checkpoint``).
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

    @classmethod
    def from_objects(
        cls, checkpoint_path: str, datamodule: Any, system: Any, **evaluator_kwargs: Any
    ) -> PTQEvaluatorSpec:
        """A spec rebuilding ``system`` and ``datamodule`` from their saved hyperparameters."""
        return cls(
            str(checkpoint_path),
            import_path(datamodule),
            init_arguments(datamodule),
            dict(evaluator_kwargs),
            import_path(system),
        )

    def __call__(self) -> PTQEvaluator:
        system = import_object(self.system_class).load_from_checkpoint(
            self.checkpoint_path, map_location="cpu"
        )
        datamodule = import_object(self.datamodule_class)(**dict(self.datamodule_kwargs))
        return PTQEvaluator(system, datamodule, **dict(self.evaluator_kwargs))


@dataclass(frozen=True)
class BuiltEvaluator:
    """A factory returning an already built, picklable evaluator (the analytic
    one, test fakes): lets an instance travel to worker processes."""

    evaluator: Evaluator

    def __call__(self) -> Evaluator:
        return self.evaluator
