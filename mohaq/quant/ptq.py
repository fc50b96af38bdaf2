"""Post-training quantization methods, chosen per run by one settings dataclass.

:class:`PTQConfig` says how a float model is quantized after training; its
defaults are MOHAQ's recipe (symmetric per-tensor grids, MMSE clipping, the
median of per-utterance activation thresholds, rounding to nearest).
:class:`PostTrainingQuantizer` applies it to a model: it sets up the
quantizers, calibrates them once in float on the calibration data (the
optimization set), and then applies any bit assignment; what depends on a
(point, bit width) pair alone (AdaRound's learned rounding, bias corrections)
is computed on first use and cached, so search candidates combine cached
results at no extra cost.

Methods, each selectable on its own:

- ``activation_statistic``: ``"median"`` of per-utterance thresholds (MOHAQ)
  or ``"pooled"``: one threshold for the whole calibration set, which is what
  the quantized model meets at inference time.
- ``activation_clipping`` / ``weight_clipping``: ``"mmse"``, ``"minmax"``,
  ``"percentile"`` (None: as the model was built).
- ``activation_grid``: ``"symmetric"`` or ``"asymmetric"`` (a zero point;
  a platform must support it, see :meth:`PTQConfig.check_platform`).
- ``per_channel_weights``: one scale per output channel of each weight.
- ``bias_correction``: removes the mean output shift that quantizing the
  weights causes, ``(W_q - W) E[x]``, where the layer has a bias to hold it
  (see :mod:`mohaq.quant.bias_correction`).
- ``adaround``: learned rounding of the weights (:mod:`mohaq.quant.adaround`)
  at the bit widths in ``adaround_bits``.
- ``output_aware_activations``: each activation threshold is refined for the
  error that matters, the network's output: with only that point quantized,
  the calibrated threshold is scaled by the factor (searched from 0.25 to
  1.25) that minimizes the KL divergence of the model's output distribution
  from the float one over ``output_aware_utterances`` calibration utterances.
  Computed once per (point, bit width) in ``output_aware_bits``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from mohaq.quant.adaround import AdaRoundSettings, adaround, output_error
from mohaq.quant.apply import apply_bit_assignment, quantizers
from mohaq.quant.assignment import MAX_BITS, MIN_BITS, BitAssignment
from mohaq.quant.bias_correction import BiasCorrector
from mohaq.quant.calibration import calibrate_activations
from mohaq.quant.clipping import CLIPPING_METHODS, ClippingMethod
from mohaq.quant.functional import fake_quantize
from mohaq.quant.moments import InputMoments, recording_inputs
from mohaq.quant.points import Workload
from mohaq.quant.quantizer import (
    CALIBRATION_STATISTICS,
    GRIDS,
    STATIC_ROLES,
    CalibrationStatistic,
    FakeQuantizer,
    Grid,
)

PTQPresetName = Literal["mohaq", "best"]
PTQ_PRESETS: tuple[str, ...] = get_args(PTQPresetName)
# Factors on the calibrated activation threshold tried by the output-aware
# search: a coarse grid, then one step either side of the best.
COARSE_MULTIPLIERS: tuple[float, ...] = tuple(0.25 + 0.125 * i for i in range(9))
FINE_STEP = 0.0625
# Bits of the values a platform stores per output channel for per-channel
# scales or activation zero-point corrections (as MOHAQ stores biases).
OVERHEAD_BITS = 16


class PTQConfigError(ValueError):
    """A post-training quantization setting is out of range, or not supported by
    the model or the platform."""


def _choice(name: str, value: object, allowed: tuple[str, ...], optional: bool = False) -> None:
    if (optional and value is None) or value in allowed:
        return
    shown = ", ".join(map(repr, allowed)) + (" or None" if optional else "")
    raise PTQConfigError(f"{name} must be one of {shown}; got {value!r}")


@dataclass(frozen=True)
class PTQConfig:
    """How post-training quantization chooses grids and roundings.

    The defaults reproduce MOHAQ. See the module docstring for each method.

    Attributes:
        weight_clipping: weight thresholds: ``"mmse"``, ``"minmax"``,
            ``"percentile"``; None keeps the model's own setting.
        activation_clipping: activation thresholds (same choices).
        activation_statistic: ``"median"`` (MOHAQ) or ``"pooled"``.
        activation_grid: ``"symmetric"`` (MOHAQ) or ``"asymmetric"``.
        per_channel_weights: one weight scale per output channel.
        bias_correction: correct the mean output shift of quantized weights.
        adaround: learned rounding of weights at ``adaround_bits``.
        adaround_bits: the bit widths that get learned rounding (higher ones
            lose little by rounding to nearest).
        adaround_iterations: optimizer steps per (point, bit width).
        output_aware_activations: refine each activation threshold for the
            model's output (see the module docstring).
        output_aware_bits: the bit widths whose thresholds are refined.
        output_aware_utterances: calibration utterances the refinement scores on.
        calibration_utterances: calibrate on at most this many utterances of
            the calibration data (None: all).
        percentile: the percentile of ``"percentile"`` clipping.
    """

    weight_clipping: ClippingMethod | None = None
    activation_clipping: ClippingMethod | None = None
    activation_statistic: CalibrationStatistic = "median"
    activation_grid: Grid = "symmetric"
    per_channel_weights: bool = False
    bias_correction: bool = False
    adaround: bool = False
    adaround_bits: tuple[int, ...] = (2, 4)
    adaround_iterations: int = 500
    output_aware_activations: bool = False
    output_aware_bits: tuple[int, ...] = (2, 4)
    output_aware_utterances: int = 16
    calibration_utterances: int | None = None
    percentile: float = 99.99

    def __post_init__(self) -> None:
        _choice("weight_clipping", self.weight_clipping, CLIPPING_METHODS, optional=True)
        _choice("activation_clipping", self.activation_clipping, CLIPPING_METHODS, optional=True)
        _choice("activation_statistic", self.activation_statistic, CALIBRATION_STATISTICS)
        _choice("activation_grid", self.activation_grid, GRIDS)
        for name in (
            "per_channel_weights", "bias_correction", "adaround", "output_aware_activations"
        ):  # fmt: skip
            if not isinstance(getattr(self, name), bool):
                raise PTQConfigError(f"{name} must be True or False; got {getattr(self, name)!r}")
        for name in ("adaround_bits", "output_aware_bits"):
            bits = tuple(getattr(self, name))
            if any(
                isinstance(b, bool) or not isinstance(b, int) or not MIN_BITS <= b <= MAX_BITS
                for b in bits
            ):
                raise PTQConfigError(
                    f"{name} must be integers from {MIN_BITS} to {MAX_BITS}; got {bits!r}"
                )
            object.__setattr__(self, name, tuple(sorted(set(bits))))
        for name in ("adaround_iterations", "output_aware_utterances"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PTQConfigError(f"{name} must be a positive integer; got {value!r}")
        if self.calibration_utterances is not None and (
            not isinstance(self.calibration_utterances, int) or self.calibration_utterances < 1
        ):
            raise PTQConfigError(
                "calibration_utterances must be None (all) or a positive integer; "
                f"got {self.calibration_utterances!r}"
            )
        if not 0 < self.percentile <= 100:
            raise PTQConfigError(f"percentile must be in (0, 100]; got {self.percentile!r}")

    # -- presets and records -------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PTQConfig:
        """A named configuration, with ``overrides`` applied.

        - ``"mohaq"``: MOHAQ's recipe (the defaults).
        - ``"best"``: what the diagnosis benchmark found best on a symmetric
          per-tensor platform (``benchmarks/results/ptq_findings.md``):
          MOHAQ's median MMSE thresholds refined output-aware, and AdaRound,
          both at 2 and 4 bits. (A pooled threshold measured worse at W4A4.)

        Raises:
            PTQConfigError: for an unknown name (listing the presets) or a bad override.
        """
        if name == "mohaq":
            base = cls()
        elif name == "best":
            base = cls(output_aware_activations=True, adaround=True)
        else:
            raise PTQConfigError(f"unknown PTQ preset {name!r}; presets: {', '.join(PTQ_PRESETS)}")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise PTQConfigError(
                f"unknown PTQConfig field(s) {unknown}; fields: {', '.join(f.name for f in fields(cls))}"
            )
        return replace(base, **overrides)

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (for run records); inverse of :meth:`from_dict`."""
        record = asdict(self)
        record["adaround_bits"] = list(self.adaround_bits)
        record["output_aware_bits"] = list(self.output_aware_bits)
        return record

    def tag(self) -> str:
        """A short name of the methods for each evaluation record: the closest
        preset, then the fields that differ from it, e.g. ``"best"`` or
        ``"mohaq+per_channel_weights=True"``."""
        mine = self.describe()
        best_name, best_diff = "", list(mine)
        for name in PTQ_PRESETS:
            base = PTQConfig.preset(name).describe()
            diff = [key for key in mine if mine[key] != base[key]]
            if len(diff) < len(best_diff):
                best_name, best_diff = name, diff
        shown = [f"{key}={mine[key]}".replace(" ", "") for key in best_diff]
        return "+".join([best_name, *shown])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PTQConfig:
        """Rebuilds a config from :meth:`describe` output.

        Raises:
            PTQConfigError: for unknown keys or bad values.
        """
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise PTQConfigError(
                f"unknown PTQConfig field(s) {unknown}; fields: {', '.join(f.name for f in fields(cls))}"
            )
        values = dict(data)
        for name in ("adaround_bits", "output_aware_bits"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    # -- platform support and cost -------------------------------------------------------
    def check_platform(
        self, *, per_channel_weights: bool, asymmetric_activations: bool, platform: str
    ) -> None:
        """Raises PTQConfigError if ``platform`` cannot run these grids.

        Args:
            per_channel_weights: whether the platform supports one weight scale
                per output channel (a cost model's ``per_channel_weights``).
            asymmetric_activations: whether it supports activation zero points
                (a cost model's ``asymmetric_activations``).
            platform: its name, for the message.
        """
        if self.per_channel_weights and not per_channel_weights:
            raise PTQConfigError(
                f"platform {platform!r} does not support per-channel weight scales "
                "(per_channel_weights: false in its YAML); use per_channel_weights=False "
                "or a platform that supports them"
            )
        if self.activation_grid == "asymmetric" and not asymmetric_activations:
            raise PTQConfigError(
                f"platform {platform!r} does not support asymmetric activations "
                "(asymmetric_activations: false in its YAML); use activation_grid='symmetric' "
                "or a platform that supports them"
            )

    def overhead_params(self, workload: Workload) -> int:
        """Values stored beside the weights that these grids add, at 16 bits each.

        Per-channel weight scales: one per output channel of each weight that
        feeds a product. An activation zero point ``z`` adds ``-z * rowsum(W_q)``
        to every output of its product (folded into a per-output bias): one
        value per output channel. Per-tensor scales are not counted (MOHAQ does
        not count them either).
        """
        extra = 0
        for point in workload.matmul_weights():
            if self.per_channel_weights:
                extra += point.out_features
            if self.activation_grid == "asymmetric":
                extra += point.out_features
        return extra

    def workload_with_overheads(self, workload: Workload) -> Workload:
        """``workload`` with :meth:`overhead_params` added to its fixed-precision
        extras (counted at ``workload.fixed_bits``), so memory costs include them."""
        extra = self.overhead_params(workload)
        if extra == 0:
            return workload
        return replace(workload, fixed_params=workload.fixed_params + extra)


def _weight_points(workload: Workload | None, named: Mapping[str, FakeQuantizer]) -> list[str]:
    if workload is not None:
        return [p.name for p in workload.matmul_weights() if p.name in named]
    return [name for name, q in named.items() if q.role == "weight"]


@dataclass
class PTQStats:
    """What preparing post-training quantization took (for records and benchmarks)."""

    calibration_utterances: int = 0
    calibration_seconds: float = 0.0
    adaround_seconds: float = 0.0
    adaround_solutions: int = 0
    adaround_output_error: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    output_aware_seconds: float = 0.0
    output_aware_multipliers: dict[str, dict[int, float]] = field(default_factory=dict)


class PostTrainingQuantizer:
    """Applies :class:`PTQConfig` to a model: calibrates once, then applies assignments.

    Args:
        model: the float model; its quantizers are configured in place.
        config: the methods.
        batches: calibration batches, one utterance each.
        forward: runs the model on one batch and returns its output (logits).
        workload: the model's workload (default: ``model.workload()`` if it has one).
        adaround_settings: optimizer settings beyond the config's iterations.
        scoring_batches: what the output-aware search scores on (e.g. the
            first calibration utterances in padded batches); default: the
            first ``output_aware_utterances`` calibration batches.

    Raises:
        PTQConfigError: if a method cannot be applied to this model (AdaRound
            or bias correction on a weight whose product input is not the
            tensor its input point sees).
    """

    def __init__(
        self,
        model: nn.Module,
        config: PTQConfig,
        batches: Iterable[Any],
        forward: Callable[[nn.Module, Any], Any],
        *,
        workload: Workload | None = None,
        adaround_settings: AdaRoundSettings | None = None,
        scoring_batches: Sequence[Any] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self._forward = forward
        if workload is None and callable(getattr(model, "workload", None)):
            workload = model.workload()  # type: ignore[operator]
        self.workload = workload
        self.named = quantizers(model)
        self.adaround_settings = replace(
            adaround_settings or AdaRoundSettings(), iterations=config.adaround_iterations
        )
        self.stats = PTQStats()
        self._configure_quantizers()
        self._weight_inputs: dict[str, str] = {}
        self._weights: dict[str, Tensor] = {}
        self._moments: dict[str, InputMoments] = {}
        self._learned: dict[tuple[str, int], Tensor] = {}
        self._shifts: dict[tuple[str, int], Tensor] = {}
        self._corrector: BiasCorrector | None = None
        self._multipliers: dict[tuple[str, int], float] = {}
        self._reference: list[Tensor] | None = None
        batches = list(batches) if not isinstance(batches, Sequence) else batches
        self._scoring: Sequence[Any] = (
            scoring_batches
            if scoring_batches is not None
            else batches[: config.output_aware_utterances]
        )
        self._calibrate(batches, forward)
        if config.bias_correction:
            means = {w: self._moments[a].mean() for w, a in self._weight_inputs.items()}
            self._corrector = BiasCorrector(model, means)

    # -- set-up --------------------------------------------------------------------------
    def _configure_quantizers(self) -> None:
        config = self.config
        for quantizer in self.named.values():
            if quantizer.role == "weight":
                quantizer.configure(
                    clipping=config.weight_clipping,
                    per_channel=config.per_channel_weights,
                    percentile=config.percentile,
                )
                quantizer.clear_learned_weights()
            elif quantizer.role not in STATIC_ROLES:
                quantizer.configure(
                    clipping=config.activation_clipping,
                    percentile=config.percentile,
                    statistic=config.activation_statistic,
                    grid=config.activation_grid if quantizer.role == "activation" else "symmetric",
                )

    def _needs_inputs(self) -> bool:
        return self.config.adaround or self.config.bias_correction

    def _calibrate(self, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any]) -> None:
        weights = _weight_points(self.workload, self.named)
        inputs: dict[str, str] = {}
        if self._needs_inputs():
            if self.workload is None:
                raise PTQConfigError(
                    "AdaRound and bias correction need the model's workload (which activation "
                    "point feeds each weight); give workload="
                )
            for name in weights:
                source = self.workload.point(name).input_point
                if source is not None and source in self.named:
                    inputs[name] = source
        start = time.perf_counter()
        seen: dict[str, Tensor] = {}
        handles = []
        if self._needs_inputs():
            for name in weights:

                def keep(module: nn.Module, args: tuple[Tensor, ...], name: str = name) -> None:  # noqa: ARG001
                    seen.setdefault(name, args[0])

                handles.append(self.named[name].register_forward_pre_hook(keep))
        try:
            with recording_inputs(self.named, sorted(set(inputs.values()))) as moments:
                self.stats.calibration_utterances = calibrate_activations(
                    self.model,
                    batches,
                    forward,
                    max_utterances=self.config.calibration_utterances,
                )
        finally:
            for handle in handles:
                handle.remove()
        self.stats.calibration_seconds = time.perf_counter() - start
        self._moments = moments
        self._weights = seen
        for name, source in inputs.items():
            weight = seen.get(name)
            record = moments.get(source)
            if weight is None or record is None or record.count == 0:
                continue
            if weight.dim() != 2 or record.features != weight.shape[1]:
                raise PTQConfigError(
                    f"AdaRound and bias correction need each weight's product input to be what "
                    f"its input point sees; {name!r} has shape {tuple(weight.shape)} but "
                    f"{source!r} sees {record.features} features (supported: SRU layers, linear "
                    "layers and per-operator GRU/LSTM points)"
                )
            self._weight_inputs[name] = source

    # -- AdaRound ------------------------------------------------------------------------
    def learned_weight(self, point: str, bits: int) -> Tensor:
        """AdaRound's quantized weight of ``point`` at ``bits`` (computed on first use).

        Raises:
            PTQConfigError: if the point has no recorded weight and input.
        """
        key = (point, bits)
        cached = self._learned.get(key)
        if cached is not None:
            return cached
        if point not in self._weight_inputs:
            raise PTQConfigError(
                f"no AdaRound data for weight point {point!r}; points with data: "
                f"{', '.join(sorted(self._weight_inputs)) or 'none'}"
            )
        quantizer = self.named[point]
        weight = self._weights[point].detach()
        second = self._moments[self._weight_inputs[point]].second_moment()
        start = time.perf_counter()
        with torch.no_grad():
            scale = quantizer.static_scale(weight, bits)
        learned = adaround(weight, scale, bits, second, self.adaround_settings)
        self.stats.adaround_seconds += time.perf_counter() - start
        self.stats.adaround_solutions += 1
        nearest = fake_quantize(weight, scale, bits)
        self.stats.adaround_output_error.setdefault(point, {})[bits] = (
            output_error(weight, nearest, second),
            output_error(weight, learned, second),
        )
        self._learned[key] = learned
        quantizer.set_learned_weight(bits, learned, weight)
        return learned

    # -- output-aware activation thresholds ------------------------------------------
    def _outputs(self) -> list[Tensor]:
        """Log-probabilities of the model's outputs on the scoring batches."""
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return [
                    torch.log_softmax(self._forward(self.model, b).float(), dim=-1)
                    for b in self._scoring
                ]
        finally:
            self.model.train(training)

    def _float_outputs(self) -> list[Tensor]:
        """The float model's output log-probabilities on the scoring batches (once)."""
        if self._reference is None:
            apply_bit_assignment(self.model, BitAssignment(), fixed_bits=None)
            self._reference = self._outputs()
        return self._reference

    def _divergence(self, reference: list[Tensor]) -> float:
        """Mean KL(float || current model) of the output distributions, per frame."""
        total, frames = 0.0, 0
        for target, output in zip(reference, self._outputs(), strict=True):
            kl = (target.exp() * (target - output)).sum(dim=-1)
            total += float(kl.sum())
            frames += kl.numel()
        return total / max(frames, 1)

    def activation_multiplier(self, point: str, bits: int) -> float:
        """The output-aware factor on ``point``'s calibrated threshold at ``bits``
        (searched on first use; see the module docstring).

        Raises:
            PTQConfigError: for a point that is not an activation point.
        """
        key = (point, bits)
        if key in self._multipliers:
            return self._multipliers[key]
        quantizer = self.named.get(point)
        if quantizer is None or quantizer.role != "activation":
            raise PTQConfigError(f"{point!r} is not an activation point of the model")
        start = time.perf_counter()
        reference = self._float_outputs()
        single = BitAssignment({point: bits})

        def score(multiplier: float) -> float:
            quantizer.set_threshold_multiplier(bits, multiplier)
            apply_bit_assignment(self.model, single, fixed_bits=None)
            return self._divergence(reference)

        scores = {m: score(m) for m in COARSE_MULTIPLIERS}
        best = min(scores, key=scores.__getitem__)
        for multiplier in (best - FINE_STEP, best + FINE_STEP):
            if multiplier > 0 and multiplier not in scores:
                scores[multiplier] = score(multiplier)
        best = min(scores, key=scores.__getitem__)
        quantizer.set_threshold_multiplier(bits, best)
        self._multipliers[key] = best
        self.stats.output_aware_seconds += time.perf_counter() - start
        self.stats.output_aware_multipliers.setdefault(point, {})[bits] = best
        return best

    def _refine_activations(self, assignment: BitAssignment) -> None:
        for point, bits in assignment.bits.items():
            quantizer = self.named.get(point)
            if (
                quantizer is not None
                and quantizer.role == "activation"
                and bits in self.config.output_aware_bits
                and (point, bits) not in self._multipliers
            ):
                self.activation_multiplier(point, bits)

    def precompute(self, bit_choices: Iterable[int]) -> None:
        """Computes every cached result a search over ``bit_choices`` can use."""
        bit_choices = tuple(bit_choices)
        if self.config.output_aware_activations:
            for point, quantizer in self.named.items():
                for bits in bit_choices:
                    if quantizer.role == "activation" and bits in self.config.output_aware_bits:
                        self.activation_multiplier(point, bits)
        if self.config.adaround:
            for point in self._weight_inputs:
                for bits in bit_choices:
                    if bits in self.config.adaround_bits:
                        self.learned_weight(point, bits)

    # -- applying ------------------------------------------------------------------------
    def apply(self, assignment: BitAssignment, *, fixed_bits: int | None = 16) -> None:
        """Sets the model's quantizers to ``assignment`` with this config's methods."""
        if self.config.output_aware_activations:
            self._refine_activations(assignment)
        apply_bit_assignment(self.model, assignment, fixed_bits=fixed_bits)
        if self.config.adaround:
            for point, bits in assignment.bits.items():
                if bits in self.config.adaround_bits and point in self._weight_inputs:
                    self.learned_weight(point, bits)
        if self._corrector is not None:
            shifts = {
                point: self._shift(point, bits)
                for point, bits in assignment.bits.items()
                if point in self._corrector.slots
            }
            self._corrector.apply(shifts)

    def _shift(self, point: str, bits: int) -> Tensor:
        key = (point, bits)
        if key not in self._shifts:
            assert self._corrector is not None
            weight = self._weights[point]
            with torch.no_grad():
                quantized = self.named[point](weight)  # learned or nearest, as evaluated
            self._shifts[key] = self._corrector.shift(point, weight, quantized)
        return self._shifts[key]

    def describe(self) -> dict[str, Any]:
        """The config plus what calibration found, JSON-ready."""
        return {
            **self.config.describe(),
            "calibrated_utterances": self.stats.calibration_utterances,
            "calibration_seconds": round(self.stats.calibration_seconds, 3),
            "adaround_seconds": round(self.stats.adaround_seconds, 3),
            "adaround_solutions": self.stats.adaround_solutions,
            "output_aware_seconds": round(self.stats.output_aware_seconds, 3),
            "output_aware_multipliers": {
                point: {str(b): m for b, m in by_bits.items()}
                for point, by_bits in self.stats.output_aware_multipliers.items()
            },
            "bias_corrected_rows": {}
            if self._corrector is None
            else self._corrector.corrected_rows(),
        }
