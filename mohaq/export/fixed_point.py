"""Fixed-point arithmetic of the integer pipeline: multipliers, requantization, saturation.

A real rescaling factor ``M`` (for example ``s_w * s_x / s_y`` when a matrix
product's accumulator moves to the next tensor's scale) is stored as an
integer multiplier ``m0`` in Q31 (``2^30 <= m0 < 2^31``) and an exponent
``shift``, ``M ~= m0 * 2^(shift - 31)`` (Jacob et al., CVPR 2018; gemmlowp;
TFLite). Two requantizers apply it:

- :func:`multiply_by_quantized_multiplier_wide`: ``round(x * m0 / 2^(31 - shift))``
  with one rounding, half away from zero, computed exactly in 64-bit pieces
  for any int64 ``x`` (int32 values; accumulators whose bound exceeds 32 bits;
  16x16-bit element-wise products). The default everywhere: the fake
  quantizer rounds a float once, and so does this.
- :func:`multiply_by_quantized_multiplier` for int32 values: gemmlowp's
  saturating rounding doubling high multiply, then a rounding right shift,
  two roundings as gemmlowp's int32 kernels do (``rounding="gemmlowp"``).

Every function takes and returns integer torch tensors (int64 storage; the
value range is what the name says) and broadcasts ``m0``/``shift`` over
``x``, so per-channel multipliers work the same way as per-tensor ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_Q31 = 2**31
ROUNDINGS: tuple[str, ...] = ("single", "gemmlowp")
# Left shift of the high-precision sums in :func:`rescale_sum`.
SUM_PRECISION_BITS = 20


class FixedPointError(ValueError):
    """A rescaling factor or a value range the integer pipeline cannot represent."""


@dataclass(frozen=True)
class QuantizedMultiplier:
    """``M ~= m0 * 2^(shift - 31)``, element-wise.

    Attributes:
        m0: int64 tensor of Q31 multipliers in ``[2^30, 2^31)`` (0 for M = 0).
        shift: int64 tensor of exponents, same shape as ``m0``.
    """

    m0: Tensor
    shift: Tensor

    def __post_init__(self) -> None:
        # Derived once: the requantizers run per time step on small tensors.
        total = 31 - self.shift
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "min_total", int(total.min()) if total.numel() else 31)
        object.__setattr__(self, "max_total", int(total.max()) if total.numel() else 31)
        object.__setattr__(self, "half", (torch.ones_like(total) << total.clamp(1, 62)) >> 1)

    def real(self) -> Tensor:
        """The factor the pair represents, as float64 (for checks and reports)."""
        return self.m0.to(torch.float64) * torch.pow(2.0, (self.shift - 31).to(torch.float64))


def quantize_multiplier(real: float | Tensor) -> QuantizedMultiplier:
    """Splits positive factors into a Q31 multiplier and an exponent.

    ``real = m * 2^e`` with ``m`` in [0.5, 1) (``frexp``); ``m0 = round(m * 2^31)``,
    and when the rounding reaches ``2^31`` the pair becomes ``(2^30, e + 1)``.

    Raises:
        FixedPointError: on a negative or non-finite factor.
    """
    values = torch.as_tensor(real, dtype=torch.float64)
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise FixedPointError(f"multipliers must be finite and >= 0; got {values.flatten()[:4]}")
    mantissa, exponent = torch.frexp(values)
    m0 = torch.round(mantissa * _Q31).to(torch.int64)
    shift = exponent.to(torch.int64)
    carry = m0 == _Q31
    m0 = torch.where(carry, torch.full_like(m0, 2**30), m0)
    shift = torch.where(carry, shift + 1, shift)
    zero = values == 0
    return QuantizedMultiplier(
        torch.where(zero, torch.zeros_like(m0), m0),
        torch.where(zero, torch.zeros_like(shift), shift),
    )


def saturate(x: Tensor, bits: int) -> Tensor:
    """Clamps to the signed ``bits``-bit range ``[-2^(bits-1), 2^(bits-1) - 1]``."""
    return x.clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def rounding_doubling_high_mul(a: Tensor, b: Tensor) -> Tensor:
    """gemmlowp's SaturatingRoundingDoublingHighMul of int32 values.

    ``(a * b + nudge) / 2^31`` truncated toward zero, with ``nudge = 2^30`` for a
    non-negative product and ``1 - 2^30`` otherwise: ``2ab / 2^32`` rounded to
    nearest (a positive tie goes up, a negative tie toward zero, as gemmlowp
    does); the one overflowing case, both at ``-2^31``, saturates to ``2^31 - 1``.
    """
    a, b = torch.broadcast_tensors(a.to(torch.int64), b.to(torch.int64))
    product = a * b
    nudge = torch.where(product >= 0, 2**30, 1 - 2**30)
    high = torch.div(product + nudge, _Q31, rounding_mode="trunc")
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return torch.where(overflow, torch.full_like(high, INT32_MAX), high)


def rounding_divide_by_pot(x: Tensor, exponent: Tensor | int) -> Tensor:
    """gemmlowp's RoundingDivideByPOT: ``x / 2^exponent`` rounded half away from zero.

    Raises:
        FixedPointError: if an exponent is outside [0, 62].
    """
    x = x.to(torch.int64)
    if isinstance(exponent, int):
        if not 0 <= exponent <= 62:
            raise FixedPointError(f"shift exponents must be in [0, 62]; got {exponent}")
        mask: Tensor | int = (1 << exponent) - 1
        threshold = (x < 0).to(torch.int64) + (((1 << exponent) - 1) >> 1)
    else:
        exponent = exponent.to(torch.int64)
        if bool((exponent < 0).any()) or bool((exponent > 62).any()):
            raise FixedPointError(
                f"shift exponents must be in [0, 62]; got {exponent.unique()[:4]}"
            )
        mask = (torch.ones_like(exponent) << exponent) - 1
        threshold = (mask >> 1) + (x < 0).to(torch.int64)
    return (x >> exponent) + ((x & mask) > threshold).to(torch.int64)


def multiply_by_quantized_multiplier(x: Tensor, multiplier: QuantizedMultiplier) -> Tensor:
    """Requantizes int32 values the gemmlowp/TFLite way: ``x * M`` rounded.

    A positive exponent (``M >= 1``) shifts ``x`` left first, saturating to
    int32; a negative one becomes a rounding right shift after the high
    multiply.

    Raises:
        FixedPointError: if ``x`` leaves the int32 range.
    """
    x = x.to(torch.int64)
    if x.numel() and (int(x.min()) < INT32_MIN or int(x.max()) > INT32_MAX):
        raise FixedPointError(
            "multiply_by_quantized_multiplier takes int32 values; use the wide form"
        )
    left = multiplier.shift.clamp(min=0)
    right = (-multiplier.shift).clamp(min=0)
    shifted = (x << left).clamp(INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(rounding_doubling_high_mul(shifted, multiplier.m0), right)


def multiply_by_quantized_multiplier_wide(x: Tensor, multiplier: QuantizedMultiplier) -> Tensor:
    """``round(x * m0 / 2^(31 - shift))`` for int64 ``x``, half away from zero, exact.

    For ``|x| < 2^31`` the product ``|x| * m0`` fits 63 bits and is shifted
    once; otherwise ``|x|`` is split at bit 31 and the pieces are multiplied
    and shifted separately, so the 94-bit product is never formed. An
    exponent above 30 (``M >= 2^30``) is an exact left shift.

    Raises:
        FixedPointError: if ``|x| >= 2^62``, ``M < 2^-62``, or the result leaves int64.
    """
    x = x.to(torch.int64)
    if multiplier.max_total > 93:
        raise FixedPointError("multipliers below 2^-62 are not supported")
    magnitude = x.abs()
    largest = int(magnitude.max()) if magnitude.numel() else 0
    if largest >= 2**62:
        raise FixedPointError("wide requantization takes |x| < 2^62")
    m0, total = multiplier.m0, multiplier.total
    if multiplier.min_total >= 1:
        if largest < _Q31 and multiplier.max_total <= 62:
            result = (magnitude * m0 + multiplier.half) >> total
        else:
            result = _split_right_shift(magnitude, m0, total)
        return torch.where(x < 0, -result, result)
    left = (-total).clamp(min=0)
    bits = torch.log2(magnitude.to(torch.float64) + 1).ceil() + 31 + left
    if bool(((total < 1) & (bits > 62)).any()):
        raise FixedPointError("the requantized value leaves int64")
    result = torch.where(
        total < 1, (magnitude * m0) << left, _split_right_shift(magnitude, m0, total.clamp(min=1))
    )
    return torch.where(x < 0, -result, result)


def _split_right_shift(magnitude: Tensor, m0: Tensor, total: Tensor) -> Tensor:
    """``round(magnitude * m0 / 2^total)`` for non-negative values below 2^62, ``total >= 1``."""
    low_mask = _Q31 - 1
    low_product = (magnitude & low_mask) * m0  # < 2^62
    high = (magnitude >> 31) * m0 + (low_product >> 31)  # x * m0 = high * 2^31 + rest
    rest = low_product & low_mask
    above = (total - 31).clamp(min=0)  # total > 31: rest only matters through the carry
    result_above = (high + ((torch.ones_like(above) << above) >> 1)) >> above
    result_at = high + (rest >= 2**30).to(torch.int64)
    below = (31 - total).clamp(min=0)  # total < 31
    half = torch.ones_like(total) << (total.clamp(min=1) - 1)
    result_below = (high << below) + ((rest + half) >> total.clamp(max=31))
    return torch.where(total > 31, result_above, torch.where(total == 31, result_at, result_below))


def requantize(
    x: Tensor, multiplier: QuantizedMultiplier, *, wide: bool, rounding: str = "single"
) -> Tensor:
    """``x * M`` rounded.

    Args:
        x: int32 values, or int64 ones with ``wide``.
        multiplier: the Q31 multiplier and exponent.
        wide: the values are int64 (always rounded once).
        rounding: for int32 values, ``"single"``: ``x * m0`` in 64 bits and one
            rounding shift (as TFLite's single-rounding kernels), which is what
            the fake quantizer's one rounding of a float gives; ``"gemmlowp"``:
            the high multiply and the rounding shift, two roundings, as
            gemmlowp's kernels (1% of 8-bit outputs of a quickstart projection
            move by one step against the fake-quantized model).

    Raises:
        ValueError: on an unknown rounding.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")
    if wide or rounding == "single":
        return multiply_by_quantized_multiplier_wide(x, multiplier)
    return multiply_by_quantized_multiplier(x, multiplier)


def rescale_sum(terms: list[tuple[Tensor, QuantizedMultiplier]]) -> Tensor:
    """``round(sum_i x_i * M_i)`` with one final rounding, as a float sum then a quantizer.

    Each term is moved to the output scale with ``SUM_PRECISION_BITS`` extra
    fraction bits (its multiplier's exponent raised by that much), the terms
    are added, and the sum is shifted back with rounding half away from zero.
    The sum must stay below ``2^(62 - 20)`` output steps.
    """
    total: Tensor | None = None
    for x, multiplier in terms:
        finer = QuantizedMultiplier(multiplier.m0, multiplier.shift + SUM_PRECISION_BITS)
        scaled = multiply_by_quantized_multiplier_wide(x, finer)
        total = scaled if total is None else total + scaled
    if total is None:
        raise FixedPointError("rescale_sum needs at least one term")
    return rounding_divide_by_pot(total, SUM_PRECISION_BITS)


def matmul_accumulator_bits(weight_bits: int, input_bits: int, depth: int) -> int:
    """Signed bits a dot product of ``depth`` terms needs: ``b_w + b_x - 1 + ceil(log2 K)``."""
    return weight_bits + input_bits - 1 + math.ceil(math.log2(max(depth, 1)))


def accumulator_bound(weight_bits: int, input_bits: int, depth: int, bias_bound: int = 0) -> int:
    """Largest ``|acc|`` of ``depth`` products of signed ``b_w``- and ``b_x``-bit values plus
    a bias of at most ``bias_bound``: ``K * 2^(b_w-1) * 2^(b_x-1) + bias_bound``."""
    return depth * 2 ** (weight_bits - 1) * 2 ** (input_bits - 1) + bias_bound


def needs_wide_accumulator(
    weight_bits: int, input_bits: int, depth: int, bias_bound: int = 0
) -> bool:
    """Whether the accumulator can leave int32 (then it is kept in int64)."""
    return accumulator_bound(weight_bits, input_bits, depth, bias_bound) > INT32_MAX
