"""Uniform fake quantization with a straight-through estimator.

Symmetric (MOHAQ's linear quantization, one scale per tensor or per channel):
at ``b`` bits the integer grid is ``[-2^(b-1), 2^(b-1) - 1]`` and the scale is
``threshold / (2^(b-1) - 1)``, so ``+threshold`` maps to the largest positive
integer. Asymmetric (an activation range ``[low, high]`` that need not be
centred on zero): the unsigned grid ``[0, 2^b - 1]`` with an integer zero
point ``z``, ``x ~ (q - z) * scale``, so 0 stays exactly representable.
Rounding is ``torch.round``: round half to even.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mohaq.quant.assignment import MAX_BITS, MIN_BITS

# Smallest threshold a scale is computed from: an all-zero tensor still gets a
# finite, positive scale (its values quantize to 0 either way).
MIN_THRESHOLD = 1e-12


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")


def qmax(bits: int) -> int:
    """Largest integer of the ``bits``-bit signed grid: ``2^(bits-1) - 1``."""
    _check_bits(bits)
    return 2 ** (bits - 1) - 1


def qmin(bits: int) -> int:
    """Smallest integer of the ``bits``-bit signed grid: ``-2^(bits-1)``."""
    _check_bits(bits)
    return -(2 ** (bits - 1))


def scale_for(threshold: Tensor | float, bits: int) -> Tensor:
    """The scale that maps ``threshold`` to :func:`qmax` (``threshold / qmax``).

    Thresholds at or below 0 are raised to ``MIN_THRESHOLD`` so the scale is
    never 0. Works element-wise on a per-channel threshold tensor.
    """
    top = qmax(bits)
    threshold = torch.as_tensor(threshold)
    if not threshold.is_floating_point():
        threshold = threshold.to(torch.float32)
    return threshold.clamp_min(MIN_THRESHOLD) / top


def _compute_dtype(x: Tensor) -> torch.dtype:
    # 16-bit grids need more mantissa than half precision offers.
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class _FakeQuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, low: int, high: int) -> Tensor:  # type: ignore[override]
        dtype = _compute_dtype(x)
        scale = scale.to(device=x.device, dtype=dtype)
        levels = torch.round(x.to(dtype) / scale)
        inside = (levels >= low) & (levels <= high)
        ctx.save_for_backward(inside)
        return (levels.clamp_(low, high) * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad_output * inside.to(grad_output.dtype), None, None, None


def asymmetric_params(low: Tensor | float, high: Tensor | float, bits: int) -> tuple[Tensor, int]:
    """``(scale, zero_point)`` of the unsigned ``bits``-bit grid covering ``[low, high]``.

    The range is widened to include 0 (a zero point inside the grid), the
    scale is ``(high - low) / (2^bits - 1)`` and the zero point
    ``round(-low / scale)``, so the grid's ends lie within one step of
    ``low`` and ``high``.
    """
    _check_bits(bits)
    low_t = torch.as_tensor(low, dtype=torch.float64).clamp_max(0.0)
    high_t = torch.as_tensor(high, dtype=torch.float64).clamp_min(0.0)
    levels = 2**bits - 1
    scale = ((high_t - low_t) / levels).clamp_min(MIN_THRESHOLD)
    zero_point = int(torch.round(-low_t / scale).clamp(0, levels).item())
    return scale.to(torch.float32), zero_point


def fake_quantize_asymmetric(
    x: Tensor, scale: Tensor | float, zero_point: int, bits: int
) -> Tensor:
    """Quantizes ``x`` to the unsigned ``bits``-bit grid with ``zero_point`` and back.

    ``(clamp(round(x / scale) + z, 0, 2^bits - 1) - z) * scale``: the same
    straight-through estimator as :func:`fake_quantize` on the integer range
    ``[-z, 2^bits - 1 - z]``.

    Raises:
        ValueError: if ``bits`` is out of range or ``zero_point`` is outside the grid.
    """
    _check_bits(bits)
    top = 2**bits - 1
    if (
        isinstance(zero_point, bool)
        or not isinstance(zero_point, int)
        or not 0 <= zero_point <= top
    ):
        raise ValueError(
            f"zero_point must be an integer from 0 to {top} at {bits} bits, got {zero_point!r}"
        )
    return _fake_quantize_range(x, scale, -zero_point, top - zero_point)


def fake_quantize(x: Tensor, scale: Tensor | float, bits: int) -> Tensor:
    """Quantizes ``x`` to the ``bits``-bit symmetric grid and back to float.

    ``clamp(round(x / scale), -2^(bits-1), 2^(bits-1) - 1) * scale``. The
    gradient with respect to ``x`` is straight-through: 1 where the rounded
    value lies inside the integer range, 0 where it was clamped. ``scale``
    receives no gradient.

    Args:
        x: the tensor to quantize.
        scale: a positive scalar or a tensor broadcastable to ``x`` (per channel).
        bits: 2 to 16.

    Raises:
        ValueError: if ``bits`` is out of range.
    """
    return _fake_quantize_range(x, scale, qmin(bits), qmax(bits))


def _fake_quantize_range(x: Tensor, scale: Tensor | float, low: int, high: int) -> Tensor:
    """``clamp(round(x / scale), low, high) * scale`` with the straight-through gradient."""
    if isinstance(scale, Tensor):
        scale = scale.detach()
    else:
        scale = torch.tensor(scale, dtype=_compute_dtype(x), device=x.device)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FakeQuantizeSTE.apply(x, scale, low, high)
    # No graph to build: skip the mask the backward pass would need.
    dtype = _compute_dtype(x)
    scale = scale.to(device=x.device, dtype=dtype)
    return torch.round(x.to(dtype) / scale).clamp_(low, high).mul_(scale).to(x.dtype)
