"""FakeQuantizer: the module that quantizes one tensor at one quantization point.

A quantizer has a role:

- ``"weight"`` and ``"fixed"`` quantize a tensor known before the forward pass
  (a weight matrix; a bias or element-wise recurrent vector kept at fixed
  point). The threshold comes from the tensor itself, by the clipping method;
  thresholds and quantized tensors are cached per bit width until the tensor
  (or a setting) changes, so a search that revisits a (point, bits) pair with
  another assignment quantizes nothing again.
- ``"activation"`` and ``"state"`` quantize tensors computed at run time. They
  use the threshold calibrated on the optimization set for the current bit
  width or, before any calibration, ``max|x|`` of the current batch. The
  calibration ``statistic`` says how utterances combine: ``"median"`` of the
  per-utterance thresholds (MOHAQ's recipe) or ``"pooled"``: one threshold
  for all the calibration data together (their histograms summed).

The grid is symmetric and signed (MOHAQ) unless an activation quantizer has
``grid="asymmetric"``: an unsigned grid with a zero point over a calibrated
``[low, high]`` range, for activations whose values are skewed. A weight
quantizer may hold learned roundings (AdaRound) per bit width, used instead
of rounding to nearest while the weight they were learned for is unchanged.

``bits = None`` means float: ``forward`` returns its input unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from mohaq.quant.assignment import MAX_BITS, MIN_BITS
from mohaq.quant.clipping import (
    CLIPPING_METHODS,
    ClippingMethod,
    abs_histogram,
    estimate_threshold,
    minmax_threshold,
    mmse_range_from_histogram,
    mmse_threshold_from_histogram,
    percentile_from_histogram,
    percentile_range_from_histogram,
    pool_histograms,
    side_maxima,
)
from mohaq.quant.functional import (
    asymmetric_params,
    fake_quantize,
    fake_quantize_asymmetric,
    scale_for,
)

QuantizerRole = Literal["weight", "activation", "state", "fixed"]
QUANTIZER_ROLES: tuple[str, ...] = get_args(QuantizerRole)
# Roles whose tensors exist before the forward pass; the others are calibrated.
STATIC_ROLES: tuple[str, ...] = ("weight", "fixed")
CalibrationStatistic = Literal["median", "pooled"]
CALIBRATION_STATISTICS: tuple[str, ...] = get_args(CalibrationStatistic)
Grid = Literal["symmetric", "asymmetric"]
GRIDS: tuple[str, ...] = get_args(Grid)

# Bins of each per-utterance |x| histogram kept for calibration.
CALIBRATION_BINS = 1024


class FakeQuantizer(nn.Module):
    """Symmetric uniform fake quantization of one tensor, float when ``bits`` is None.

    Args:
        point_name: the quantization point this quantizer implements (a name of
            the model's workload); None for fixed-precision extras that are not
            searched (biases, element-wise recurrent vectors).
        role: ``"weight"``, ``"activation"``, ``"state"`` or ``"fixed"``.
        clipping: how thresholds are chosen: ``"mmse"``, ``"minmax"`` or
            ``"percentile"``. For activations and states it is applied to each
            calibration utterance.
        percentile: the percentile of ``|x|`` used by ``"percentile"`` clipping.
        per_channel: one scale per channel along ``channel_axis`` (weight and
            fixed roles only).
        channel_axis: the channel dimension for ``per_channel``.
        statistic: how calibration utterances combine (run-time roles):
            ``"median"`` of per-utterance thresholds or ``"pooled"``.
        grid: ``"symmetric"`` (signed, zero point 0) or ``"asymmetric"``
            (unsigned with a zero point; activation role only).

    Raises:
        ValueError: on an unknown role, clipping method, statistic or grid, a
            percentile outside (0, 100], ``per_channel`` with a run-time role,
            or an asymmetric grid on another role than ``"activation"``.
    """

    def __init__(
        self,
        point_name: str | None = None,
        *,
        role: QuantizerRole = "activation",
        clipping: ClippingMethod = "mmse",
        percentile: float = 99.99,
        per_channel: bool = False,
        channel_axis: int = 0,
        statistic: CalibrationStatistic = "median",
        grid: Grid = "symmetric",
    ) -> None:
        super().__init__()
        if role not in QUANTIZER_ROLES:
            raise ValueError(f"role must be one of {', '.join(QUANTIZER_ROLES)}; got {role!r}")
        self.point_name = point_name
        self.role: QuantizerRole = role
        self.channel_axis = channel_axis
        self.observing = False
        self._bits: int | None = None
        # Calibration statistics: one |x| histogram and max per utterance.
        self._histograms: list[Tensor] = []
        self._maxima: list[Tensor] = []
        self._calibrated_thresholds: dict[int, Tensor] = {}
        self._calibrated_ranges: dict[int, tuple[Tensor, Tensor]] = {}
        self._calibrated_scales: dict[tuple[int, torch.device | None], Tensor] = {}
        self._calibrated_affine: dict[tuple[int, torch.device | None], tuple[Tensor, int]] = {}
        # Factors on the calibrated threshold/range per bit width (output-aware search).
        self._threshold_multipliers: dict[int, float] = {}
        # Caches of the static roles: per (bits, inference mode), for one source
        # tensor identified by its memory, version and the settings (the tensor
        # is held so that its memory cannot be reused by another one).
        self._static_source: tuple[Any, ...] | None = None
        # In a tuple: a Parameter assigned to a module attribute would be registered.
        self._static_tensor: tuple[Tensor, ...] = ()
        self._threshold_cache: dict[tuple[int, bool], Tensor] = {}
        self._output_cache: dict[tuple[int, bool], Tensor] = {}
        # Learned roundings (AdaRound): bits -> quantized weight, with the key of
        # the weight they were learned from.
        self._learned: dict[int, tuple[tuple[Any, ...], Tensor]] = {}
        self.clipping: ClippingMethod = clipping
        self.percentile = percentile
        self.per_channel = per_channel
        self.statistic: CalibrationStatistic = statistic
        self.grid: Grid = grid
        self.configure(
            clipping=clipping, percentile=percentile, per_channel=per_channel,
            statistic=statistic, grid=grid,
        )  # fmt: skip

    def configure(
        self,
        *,
        clipping: ClippingMethod | None = None,
        percentile: float | None = None,
        per_channel: bool | None = None,
        statistic: CalibrationStatistic | None = None,
        grid: Grid | None = None,
    ) -> None:
        """Changes how thresholds are chosen; None leaves a setting as it is.

        Calibration data are kept (thresholds are recomputed from them);
        cached thresholds and outputs are dropped.

        Raises:
            ValueError: as the constructor, naming the setting and what is allowed.
        """
        clipping = self.clipping if clipping is None else clipping
        percentile = self.percentile if percentile is None else percentile
        per_channel = self.per_channel if per_channel is None else per_channel
        statistic = self.statistic if statistic is None else statistic
        grid = self.grid if grid is None else grid
        if clipping not in CLIPPING_METHODS:
            raise ValueError(
                f"clipping must be one of {', '.join(CLIPPING_METHODS)}; got {clipping!r}"
            )
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        if per_channel and self.role not in STATIC_ROLES:
            raise ValueError(
                f"per_channel is supported for roles {', '.join(STATIC_ROLES)}; "
                f"got role {self.role!r}"
            )
        if statistic not in CALIBRATION_STATISTICS:
            raise ValueError(
                f"statistic must be one of {', '.join(CALIBRATION_STATISTICS)}; got {statistic!r}"
            )
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {', '.join(GRIDS)}; got {grid!r}")
        if grid == "asymmetric" and self.role != "activation":
            raise ValueError(
                f"grid 'asymmetric' is supported for role 'activation'; got role {self.role!r}"
            )
        self.clipping, self.percentile, self.per_channel = clipping, percentile, per_channel
        self.statistic, self.grid = statistic, grid
        self._forget_derived()

    def _forget_derived(self) -> None:
        """Drops everything computed from the calibration data or the settings."""
        self._threshold_multipliers.clear()
        self._forget_thresholds()

    def _forget_thresholds(self) -> None:
        self._calibrated_thresholds.clear()
        self._calibrated_ranges.clear()
        self._calibrated_scales.clear()
        self._calibrated_affine.clear()
        self._forget_static()

    def _forget_static(self) -> None:
        self._static_source, self._static_tensor = None, ()
        self._threshold_cache.clear()
        self._output_cache.clear()

    # -- bits ------------------------------------------------------------------------
    @property
    def bits(self) -> int | None:
        """The bit width, 2 to 16, or None for float."""
        return self._bits

    @bits.setter
    def bits(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not MIN_BITS <= value <= MAX_BITS
        ):
            raise ValueError(
                f"bits of quantizer {self.point_name!r} must be None (float) or an integer "
                f"from {MIN_BITS} to {MAX_BITS}; got {value!r}"
            )
        self._bits = value

    # -- forward ---------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self.observing and self.role not in STATIC_ROLES:
            self.observe(x)
            return x
        bits = self._bits
        if bits is None:
            return x
        if self.role in STATIC_ROLES:
            return self._quantize_static(x, bits)
        if self.grid == "asymmetric" and self.has_calibration:
            scale, zero_point = self.activation_params(bits, x.device)
            return fake_quantize_asymmetric(x, scale, zero_point, bits)
        return fake_quantize(x, self._runtime_scale(x, bits), bits)

    def quant_params(self, x: Tensor | None = None) -> tuple[Tensor, int] | None:
        """``(scale, bits)`` for kernels that quantize inside their own loop.

        A recurrent cell quantizing its state at every step calls this once
        and then :func:`mohaq.quant.functional.fake_quantize` per step. Returns
        None when the quantizer is float or observing (while observing, call
        the quantizer on the stacked states instead so they are recorded).

        Args:
            x: the tensor to be quantized; needed by the static roles and by a
                run-time role that has no calibration yet (``max|x|``).

        Raises:
            RuntimeError: if ``x`` is needed but not given, or the grid is
                asymmetric (it has a zero point; use :meth:`activation_params`).
        """
        bits = self._bits
        if bits is None or self.observing:
            return None
        if self.grid == "asymmetric":
            raise RuntimeError(
                f"quantizer {self.point_name!r} has an asymmetric grid; quant_params gives "
                "symmetric (scale, bits) only"
            )
        if self.role in STATIC_ROLES:
            if x is None:
                raise RuntimeError(f"quantizer {self.point_name!r} ({self.role}) needs x")
            return self._static_scale(x, bits), bits
        if not self.has_calibration and x is None:
            raise RuntimeError(
                f"quantizer {self.point_name!r} is not calibrated; pass x for a dynamic scale"
            )
        return self._runtime_scale(x, bits), bits

    # -- static roles ----------------------------------------------------------------
    def _cache_key(self, x: Tensor, bits: int) -> tuple[int, bool] | None:
        """The key of ``x`` at ``bits`` in the static caches (None: not cacheable).

        The caches hold one source tensor's results; a different tensor, a new
        version of it (an optimizer step, a bias correction) or other settings
        empty them first.
        """
        if x.is_inference():
            return None  # inference tensors have no version counter to detect changes
        source = (
            x.data_ptr(), x._version, x.shape, x.stride(), x.dtype, x.device,
            self.clipping, self.percentile, self.per_channel, self.channel_axis,
        )  # fmt: skip
        if source != self._static_source:
            self._forget_static()
            self._static_source, self._static_tensor = source, (x,)
        return bits, torch.is_inference_mode_enabled()

    def static_scale(self, x: Tensor, bits: int) -> Tensor:
        """The scale the weight/fixed quantizer uses for ``x`` at ``bits``: a scalar, or
        per channel shaped to broadcast against ``x`` (size 1 except ``channel_axis``).

        Raises:
            RuntimeError: for a run-time role (its scale comes from calibration).
        """
        if self.role not in STATIC_ROLES:
            raise RuntimeError(
                f"quantizer {self.point_name!r} has run-time role {self.role!r}; "
                "use activation_params for its calibrated scale"
            )
        return self._static_scale(x, bits)

    def _static_scale(self, x: Tensor, bits: int) -> Tensor:
        key = self._cache_key(x, bits)
        if key is not None and key in self._threshold_cache:
            return self._threshold_cache[key]
        axis = self.channel_axis if self.per_channel else None
        with torch.no_grad():
            threshold = estimate_threshold(
                x.detach(), self.clipping, bits, channel_axis=axis, percentile=self.percentile
            )
            scale = scale_for(threshold, bits)
            if axis is not None:
                shape = [1] * x.dim()
                shape[axis] = x.shape[axis]
                scale = scale.reshape(shape)
        if key is not None:
            self._threshold_cache[key] = scale
        return scale

    def _quantize_static(self, x: Tensor, bits: int) -> Tensor:
        building_graph = torch.is_grad_enabled() and x.requires_grad
        if building_graph:
            return fake_quantize(x, self._static_scale(x, bits), bits)
        learned = self.learned_weight(x, bits)
        if learned is not None:
            return learned
        # Inference (eval or no_grad): the same weights give the same result,
        # so a post-training search does not re-quantize them every batch.
        key = self._cache_key(x, bits)
        if key is not None and key in self._output_cache:
            return self._output_cache[key]
        output = fake_quantize(x, self._static_scale(x, bits), bits)
        if key is not None:
            self._output_cache[key] = output
        return output

    # -- learned rounding (weights) ------------------------------------------------------
    @staticmethod
    def _source_key(weight: Tensor) -> tuple[Any, ...]:
        return (weight.data_ptr(), weight._version, weight.shape, weight.dtype, weight.device)

    def set_learned_weight(self, bits: int, quantized: Tensor, source: Tensor) -> None:
        """Uses ``quantized`` (on the ``bits``-bit grid) for ``source`` at ``bits``.

        Inference forwards (no graph to build) return it instead of rounding
        ``source`` to nearest, as long as ``source`` is the same tensor,
        unchanged; training forwards always round to nearest.

        Raises:
            ValueError: for a role other than ``"weight"`` or a shape mismatch.
        """
        if self.role != "weight":
            raise ValueError(
                f"learned rounding is for role 'weight'; quantizer {self.point_name!r} "
                f"has role {self.role!r}"
            )
        if quantized.shape != source.shape:
            raise ValueError(
                f"quantizer {self.point_name!r}: learned weight of shape {tuple(quantized.shape)} "
                f"for a weight of shape {tuple(source.shape)}"
            )
        self._learned[int(bits)] = (self._source_key(source), quantized.detach())

    def learned_weight(self, weight: Tensor, bits: int) -> Tensor | None:
        """The learned rounding of ``weight`` at ``bits``, or None (round to nearest)."""
        entry = self._learned.get(bits)
        if entry is None or weight.is_inference() or entry[0] != self._source_key(weight):
            return None
        return entry[1]

    @property
    def learned_bits(self) -> tuple[int, ...]:
        """Bit widths with a learned rounding."""
        return tuple(sorted(self._learned))

    def clear_learned_weights(self) -> None:
        self._learned.clear()

    # -- run-time roles --------------------------------------------------------------
    def _runtime_scale(self, x: Tensor | None, bits: int) -> Tensor:
        if not self.has_calibration:
            # Uncalibrated: max|x| of this batch, the cheapest dynamic choice.
            assert x is not None
            return scale_for(minmax_threshold(x), bits)
        device = None if x is None else x.device
        key = (bits, device)
        scale = self._calibrated_scales.get(key)
        if scale is None:
            # Kept per device so a GPU forward does not copy the scale every call.
            scale = scale_for(self.threshold_for(bits), bits)
            scale = scale if device is None else scale.to(device)
            self._calibrated_scales[key] = scale
        return scale

    # -- calibration -----------------------------------------------------------------
    @property
    def has_calibration(self) -> bool:
        """Whether calibration statistics have been recorded (or loaded)."""
        return len(self._maxima) > 0

    @property
    def num_observed(self) -> int:
        """Utterances recorded so far."""
        return len(self._maxima)

    def observe(self, x: Tensor) -> None:
        """Records the |x| histogram and max of one utterance.

        Calibration runs with batch size 1, so each call is one utterance. The
        histogram keeps positive and negative values apart (shape ``(2, bins)``)
        so the MMSE search can clip each side where the grid does.
        """
        with torch.no_grad():
            hist, max_abs = abs_histogram(x.detach(), CALIBRATION_BINS, split_sign=True)
        self._histograms.append(hist.cpu())
        self._maxima.append(max_abs.to(torch.float32).cpu())
        self._forget_derived()

    def reset_calibration(self) -> None:
        """Forgets every recorded utterance."""
        self._histograms.clear()
        self._maxima.clear()
        self._forget_derived()

    def _require_calibration(self) -> None:
        if not self.has_calibration:
            raise RuntimeError(
                f"quantizer {self.point_name!r} has no calibration data; "
                "run mohaq.quant.calibration.calibrate_activations first"
            )

    def pooled_histogram(self) -> tuple[Tensor, Tensor]:
        """All recorded utterances as one split-sign histogram: ``((2, bins), upper)``.

        Raises:
            RuntimeError: if nothing has been recorded.
        """
        self._require_calibration()
        return pool_histograms(torch.stack(self._histograms), torch.stack(self._maxima))

    def threshold_for(self, bits: int) -> Tensor:
        """The calibrated threshold of the symmetric grid at ``bits``.

        With the ``"median"`` statistic, each utterance's threshold is chosen
        by the clipping method from that utterance's histogram (MMSE), its max
        (minmax) or its percentile, and the median is kept (the median of an
        even count is the mean of the two middle values). With ``"pooled"``,
        the clipping method is applied once to the histogram of all utterances.

        Raises:
            RuntimeError: if nothing has been recorded.
        """
        cached = self._calibrated_thresholds.get(bits)
        if cached is not None:
            return cached
        self._require_calibration()
        maxima = torch.stack(self._maxima)
        if self.statistic == "pooled":
            if self.clipping == "minmax":
                threshold = maxima.max()
            else:
                pooled, upper = self.pooled_histogram()
                if self.clipping == "mmse":
                    threshold = mmse_threshold_from_histogram(pooled, upper, bits, split_sign=True)
                else:
                    threshold = percentile_from_histogram(pooled.sum(0), upper, self.percentile)
            threshold = threshold.to(torch.float32).reshape(())
        else:
            if self.clipping == "minmax":
                per_utterance = maxima
            else:
                histograms = torch.stack(self._histograms)
                if self.clipping == "mmse":
                    per_utterance = mmse_threshold_from_histogram(
                        histograms, maxima, bits, split_sign=True
                    )
                else:
                    magnitudes = histograms.sum(dim=1)
                    per_utterance = percentile_from_histogram(magnitudes, maxima, self.percentile)
            threshold = torch.quantile(per_utterance.to(torch.float32), 0.5)
        threshold = threshold * self.threshold_multiplier(bits)
        self._calibrated_thresholds[bits] = threshold
        return threshold

    def threshold_multiplier(self, bits: int) -> float:
        """The factor applied to the calibrated threshold (or range) at ``bits``; 1 by default."""
        return self._threshold_multipliers.get(bits, 1.0)

    def set_threshold_multiplier(self, bits: int, multiplier: float) -> None:
        """Scales the calibrated threshold (symmetric grid) or both ends of the range
        (asymmetric grid) at ``bits`` by ``multiplier``, e.g. as chosen by an
        output-aware search. Cleared when the calibration data or settings change.

        Raises:
            ValueError: if ``multiplier`` is not positive.
        """
        if not multiplier > 0:
            raise ValueError(f"multiplier must be > 0, got {multiplier!r}")
        self._threshold_multipliers[int(bits)] = float(multiplier)
        self._forget_thresholds()

    def range_for(self, bits: int) -> tuple[Tensor, Tensor]:
        """The calibrated ``[low, high]`` range of the asymmetric grid at ``bits``.

        Chosen by the clipping method (MMSE over both ends, the min and max,
        or the lower and upper percentiles) from the pooled histogram, or per
        utterance and then the median of each end, as ``statistic`` says.

        Raises:
            RuntimeError: if nothing has been recorded.
        """
        cached = self._calibrated_ranges.get(bits)
        if cached is not None:
            return cached
        self._require_calibration()
        if self.statistic == "pooled":
            pooled, upper = self.pooled_histogram()
            sources = [(pooled, upper)]
        else:
            sources = list(zip(self._histograms, self._maxima, strict=True))
        lows, highs = [], []
        for hist, upper in sources:
            low, high = self._range_of(hist, upper, bits)
            lows.append(low)
            highs.append(high)
        multiplier = self.threshold_multiplier(bits)
        result = (
            torch.quantile(torch.stack(lows).float(), 0.5) * multiplier,
            torch.quantile(torch.stack(highs).float(), 0.5) * multiplier,
        )
        self._calibrated_ranges[bits] = result
        return result

    def _range_of(self, hist: Tensor, upper: Tensor, bits: int) -> tuple[Tensor, Tensor]:
        if self.clipping == "mmse":
            return mmse_range_from_histogram(hist, upper, bits)
        if self.clipping == "percentile":
            return percentile_range_from_histogram(hist, upper, self.percentile)
        negative, positive = side_maxima(hist, upper)
        return -negative, positive

    def activation_params(
        self, bits: int, device: torch.device | None = None
    ) -> tuple[Tensor, int]:
        """``(scale, zero_point)`` of the calibrated grid at ``bits``.

        Symmetric grid: ``(threshold / qmax, 0)`` on the signed integers
        ``[-2^(b-1), 2^(b-1) - 1]``. Asymmetric: the scale and zero point of
        the unsigned integers ``[0, 2^b - 1]`` over :meth:`range_for`
        (``x ~ (q - zero_point) * scale``).

        Raises:
            RuntimeError: if nothing has been recorded.
        """
        key = (bits, device)
        cached = self._calibrated_affine.get(key)
        if cached is None:
            if self.grid == "asymmetric":
                scale, zero_point = asymmetric_params(*self.range_for(bits), bits)
            else:
                scale, zero_point = scale_for(self.threshold_for(bits), bits), 0
            cached = (scale if device is None else scale.to(device), zero_point)
            self._calibrated_affine[key] = cached
        return cached

    # -- checkpoints -----------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Tensor]:
        if not self.has_calibration:
            return {
                "histograms": torch.zeros(0, 2, CALIBRATION_BINS),
                "maxima": torch.zeros(0),
            }
        return {"histograms": torch.stack(self._histograms), "maxima": torch.stack(self._maxima)}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        histograms, maxima = state["histograms"], state["maxima"]
        if histograms.shape[0] != maxima.shape[0]:
            raise ValueError(
                f"quantizer {self.point_name!r}: calibration state has "
                f"{histograms.shape[0]} histograms but {maxima.shape[0]} maxima"
            )
        self._histograms = [h.cpu().float() for h in histograms]
        self._maxima = [m.cpu().float() for m in maxima]
        self._forget_derived()

    def extra_repr(self) -> str:
        parts = [
            f"point={self.point_name!r}",
            f"role={self.role}",
            f"bits={self._bits}",
            f"clipping={self.clipping}",
        ]
        if self.per_channel:
            parts.append(f"per_channel=True, channel_axis={self.channel_axis}")
        if self.role not in STATIC_ROLES and self.statistic != "median":
            parts.append(f"statistic={self.statistic}")
        if self.grid != "symmetric":
            parts.append(f"grid={self.grid}")
        if self.clipping == "percentile":
            parts.append(f"percentile={self.percentile}")
        return ", ".join(parts)
