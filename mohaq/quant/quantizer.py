"""FakeQuantizer: the module that quantizes one tensor at one quantization point.

A quantizer has a role:

- ``"weight"`` and ``"fixed"`` quantize a tensor known before the forward pass
  (a weight matrix; a bias or element-wise recurrent vector kept at fixed
  point). The threshold comes from the tensor itself, by the clipping method,
  and is cached until the tensor changes.
- ``"activation"`` and ``"state"`` quantize tensors computed at run time. They
  use the threshold calibrated on the optimization set for the current bit
  width (the median over utterances of the per-utterance threshold, MOHAQ's
  recipe) or, before any calibration, ``max|x|`` of the current batch.

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
    mmse_threshold_from_histogram,
    percentile_from_histogram,
)
from mohaq.quant.functional import fake_quantize, scale_for

QuantizerRole = Literal["weight", "activation", "state", "fixed"]
QUANTIZER_ROLES: tuple[str, ...] = get_args(QuantizerRole)
# Roles whose tensors exist before the forward pass; the others are calibrated.
STATIC_ROLES: tuple[str, ...] = ("weight", "fixed")

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

    Raises:
        ValueError: on an unknown role or clipping method, a percentile outside
            (0, 100], or ``per_channel`` with a run-time role.
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
    ) -> None:
        super().__init__()
        if role not in QUANTIZER_ROLES:
            raise ValueError(f"role must be one of {', '.join(QUANTIZER_ROLES)}; got {role!r}")
        if clipping not in CLIPPING_METHODS:
            raise ValueError(
                f"clipping must be one of {', '.join(CLIPPING_METHODS)}; got {clipping!r}"
            )
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        if per_channel and role not in STATIC_ROLES:
            raise ValueError(
                f"per_channel is supported for roles {', '.join(STATIC_ROLES)}; got role {role!r}"
            )
        self.point_name = point_name
        self.role: QuantizerRole = role
        self.clipping: ClippingMethod = clipping
        self.percentile = percentile
        self.per_channel = per_channel
        self.channel_axis = channel_axis
        self.observing = False
        self._bits: int | None = None
        # Calibration statistics: one |x| histogram and max per utterance.
        self._histograms: list[Tensor] = []
        self._maxima: list[Tensor] = []
        self._calibrated_thresholds: dict[int, Tensor] = {}
        self._calibrated_scales: dict[tuple[int, torch.device | None], Tensor] = {}
        # Caches of the static roles, keyed by the tensor's identity and version.
        self._threshold_cache: tuple[tuple[Any, ...], Tensor] | None = None
        self._output_cache: tuple[tuple[Any, ...], Tensor] | None = None

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
        if value != self._bits:
            self._output_cache = None
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
            RuntimeError: if ``x`` is needed but not given.
        """
        bits = self._bits
        if bits is None or self.observing:
            return None
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
    def _cache_key(self, x: Tensor, bits: int) -> tuple[Any, ...] | None:
        if x.is_inference():
            return None  # inference tensors have no version counter to detect changes
        return (
            bits,
            x.data_ptr(),
            x._version,
            x.shape,
            x.dtype,
            x.device,
            torch.is_inference_mode_enabled(),
        )

    def _static_scale(self, x: Tensor, bits: int) -> Tensor:
        key = self._cache_key(x, bits)
        if (
            key is not None
            and self._threshold_cache is not None
            and self._threshold_cache[0] == key
        ):
            return self._threshold_cache[1]
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
            self._threshold_cache = (key, scale)
        return scale

    def _quantize_static(self, x: Tensor, bits: int) -> Tensor:
        building_graph = torch.is_grad_enabled() and x.requires_grad
        if building_graph:
            return fake_quantize(x, self._static_scale(x, bits), bits)
        # Inference (eval or no_grad): the same weights give the same result,
        # so a post-training search does not re-quantize them every batch.
        key = self._cache_key(x, bits)
        if key is not None and self._output_cache is not None and self._output_cache[0] == key:
            return self._output_cache[1]
        output = fake_quantize(x, self._static_scale(x, bits), bits)
        if key is not None:
            self._output_cache = (key, output)
        return output

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
        self._calibrated_thresholds.clear()
        self._calibrated_scales.clear()

    def reset_calibration(self) -> None:
        """Forgets every recorded utterance."""
        self._histograms.clear()
        self._maxima.clear()
        self._calibrated_thresholds.clear()
        self._calibrated_scales.clear()

    def threshold_for(self, bits: int) -> Tensor:
        """The calibrated threshold at ``bits``: the median of per-utterance thresholds.

        Each utterance's threshold is chosen by the clipping method from that
        utterance's histogram (MMSE), its max (minmax) or its percentile. The
        median of an even count is the mean of the two middle values.

        Raises:
            RuntimeError: if nothing has been recorded.
        """
        cached = self._calibrated_thresholds.get(bits)
        if cached is not None:
            return cached
        if not self.has_calibration:
            raise RuntimeError(
                f"quantizer {self.point_name!r} has no calibration data; "
                "run mohaq.quant.calibration.calibrate_activations first"
            )
        maxima = torch.stack(self._maxima)
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
        self._calibrated_thresholds[bits] = threshold
        return threshold

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
        self._calibrated_thresholds.clear()
        self._calibrated_scales.clear()

    def extra_repr(self) -> str:
        parts = [
            f"point={self.point_name!r}",
            f"role={self.role}",
            f"bits={self._bits}",
            f"clipping={self.clipping}",
        ]
        if self.per_channel:
            parts.append(f"per_channel=True, channel_axis={self.channel_axis}")
        if self.clipping == "percentile":
            parts.append(f"percentile={self.percentile}")
        return ", ".join(parts)
