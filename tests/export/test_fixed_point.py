"""Fixed-point requantization: hand-computed integers and an exact reference."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch

from mohaq.export.fixed_point import (
    FixedPointError,
    accumulator_bound,
    matmul_accumulator_bits,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_wide,
    needs_wide_accumulator,
    quantize_multiplier,
    requantize,
    rescale_sum,
    rounding_divide_by_pot,
    rounding_doubling_high_mul,
    saturate,
)


def test_multipliers_are_q31_mantissas_with_exponents() -> None:
    m = quantize_multiplier(torch.tensor([0.5, 0.75, 3.0, 0.0]))
    assert m.m0.tolist() == [2**30, 3 * 2**29, 3 * 2**29, 0]
    assert m.shift.tolist() == [0, 0, 2, 0]
    assert m.real().tolist() == [0.5, 0.75, 3.0, 0.0]
    # A mantissa that rounds up to 2^31 moves to the next exponent.
    almost_one = quantize_multiplier(1 - 2**-40)
    assert (int(almost_one.m0), int(almost_one.shift)) == (2**30, 1)
    with pytest.raises(FixedPointError, match=">= 0"):
        quantize_multiplier(-0.5)


def test_gemmlowp_high_multiply_and_rounding_shift_by_hand() -> None:
    half = 2**30  # 0.5 in Q31
    # 2 * 5 * 2^30 / 2^32 = 2.5 -> 3; -2.5 -> -2 (a negative tie goes toward zero).
    assert rounding_doubling_high_mul(torch.tensor([5, -5, 7]), torch.tensor(half)).tolist() == [
        3,
        -2,
        4,
    ]
    assert (
        int(rounding_doubling_high_mul(torch.tensor(-(2**31)), torch.tensor(-(2**31)))) == 2**31 - 1
    )
    # x / 2^2 rounded half away from zero.
    assert rounding_divide_by_pot(torch.tensor([5, 6, -6, -5, 7]), 2).tolist() == [1, 2, -2, -1, 2]


def test_int32_requantization_by_hand() -> None:
    assert multiply_by_quantized_multiplier(torch.tensor([5, -5, 7, -7]), quantize_multiplier(0.5)).tolist() == [
        3, -2, 4, -3,
    ]  # fmt: skip
    # 0.25: high multiply (2.5 -> 3) then shift (1.5 -> 2): gemmlowp's two roundings.
    assert int(multiply_by_quantized_multiplier(torch.tensor(5), quantize_multiplier(0.25))) == 2
    # M = 3 shifts left first: 100 * 3.
    assert int(multiply_by_quantized_multiplier(torch.tensor(100), quantize_multiplier(3.0))) == 300
    with pytest.raises(FixedPointError, match="int32"):
        multiply_by_quantized_multiplier(torch.tensor(2**40), quantize_multiplier(0.5))


def _exact(x: int, m0: int, shift: int) -> int:
    value = Fraction(x * m0, 2 ** (31 - shift))
    magnitude = int((abs(value) * 2 + 1) // 2)
    return magnitude if value >= 0 else -magnitude


def test_wide_requantization_is_exact_rounding_half_away_from_zero() -> None:
    assert multiply_by_quantized_multiplier_wide(torch.tensor([5, -6, 6]), quantize_multiplier(0.25)).tolist() == [
        1, -2, 2,
    ]  # fmt: skip
    rng = random.Random(0)
    for i in range(300):
        # Both paths: one 64-bit product below 2^31, the split product above.
        x = rng.randint(-(2**46), 2**46) if i % 2 else rng.randint(-(2**31) + 1, 2**31 - 1)
        multiplier = quantize_multiplier(10 ** rng.uniform(-9, 3))
        expected = _exact(x, int(multiplier.m0), int(multiplier.shift))
        assert int(multiply_by_quantized_multiplier_wide(torch.tensor(x), multiplier)) == expected


def test_wide_requantization_shifts_left_for_large_multipliers() -> None:
    huge = quantize_multiplier(torch.tensor([2.0**40, 3e9]))
    assert multiply_by_quantized_multiplier_wide(torch.tensor([3, -7]), huge).tolist() == [
        3 * 2**40, -21_000_000_000,
    ]  # fmt: skip
    with pytest.raises(FixedPointError, match="leaves int64"):
        multiply_by_quantized_multiplier_wide(torch.tensor(2**40), quantize_multiplier(2.0**30))


def test_int32_requantization_is_within_one_step_of_exact() -> None:
    rng = random.Random(1)
    for _ in range(300):
        x = rng.randint(-(2**31), 2**31 - 1)
        multiplier = quantize_multiplier(10 ** rng.uniform(-9, -0.01))
        exact = _exact(x, int(multiplier.m0), int(multiplier.shift))
        assert abs(int(multiply_by_quantized_multiplier(torch.tensor(x), multiplier)) - exact) <= 1


def test_rescale_sum_rounds_once() -> None:
    quarter = quantize_multiplier(0.25)
    # 0.25 + 0.25 = 0.5 -> 1 with one rounding (two separate roundings give 0).
    assert int(rescale_sum([(torch.tensor(1), quarter), (torch.tensor(1), quarter)])) == 1
    assert (
        int(rescale_sum([(torch.tensor(3), quantize_multiplier(0.5)), (torch.tensor(1), quarter)]))
        == 2
    )
    assert int(rescale_sum([(torch.tensor(-3), quantize_multiplier(0.5))])) == -2


def test_accumulator_bounds_follow_the_bit_formula() -> None:
    assert matmul_accumulator_bits(16, 16, 1100) == 42
    assert matmul_accumulator_bits(8, 8, 1100) == 26
    assert accumulator_bound(8, 8, 1100) == 1100 * 128 * 128
    assert not needs_wide_accumulator(8, 8, 1100)
    assert needs_wide_accumulator(16, 16, 1100)
    assert not needs_wide_accumulator(16, 8, 256)  # exactly 2^30
    assert needs_wide_accumulator(16, 8, 256, bias_bound=2**30)


def test_saturation_clamps_to_the_signed_range() -> None:
    assert saturate(torch.tensor([-200, -8, 7, 200]), 4).tolist() == [-8, -8, 7, 7]


def test_single_rounding_is_the_default_and_gemmlowp_an_option() -> None:
    quarter = quantize_multiplier(0.25)
    x = torch.tensor([5, -5, 6])
    # 1.25, -1.25, 1.5: one rounding -> 1, -1, 2; gemmlowp's two -> 2, -1, 2.
    assert requantize(x, quarter, wide=False).tolist() == [1, -1, 2]
    assert requantize(x, quarter, wide=False, rounding="gemmlowp").tolist() == [2, -1, 2]
    assert requantize(x, quarter, wide=True, rounding="gemmlowp").tolist() == [1, -1, 2]
    with pytest.raises(ValueError, match="single, gemmlowp"):
        requantize(x, quarter, wide=False, rounding="nearest")
