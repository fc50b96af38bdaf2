from __future__ import annotations

import numpy as np
import pytest
import torch

from mohaq.quant.functional import (
    asymmetric_params,
    fake_quantize,
    fake_quantize_asymmetric,
    qmax,
    qmin,
    scale_for,
)


def _numpy_reference(x: np.ndarray, scale: float, bits: int) -> np.ndarray:
    # np.round rounds half to even, like torch.round (the rounding we chose).
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return np.clip(np.round(x / scale), low, high) * scale


@pytest.mark.parametrize(
    ("bits", "top", "bottom"), [(2, 1, -2), (4, 7, -8), (8, 127, -128), (16, 32767, -32768)]
)
def test_integer_range(bits: int, top: int, bottom: int) -> None:
    assert qmax(bits) == top
    assert qmin(bits) == bottom


@pytest.mark.parametrize("bits", [1, 17, 4.0, True])
def test_bits_out_of_range(bits: object) -> None:
    with pytest.raises(ValueError, match="2 to 16"):
        qmax(bits)  # type: ignore[arg-type]


def test_scale_is_threshold_over_qmax_and_never_zero() -> None:
    assert scale_for(7.0, 4).item() == pytest.approx(1.0)
    assert scale_for(torch.tensor([2.54, 1.27]), 8).tolist() == pytest.approx([0.02, 0.01])
    assert scale_for(0.0, 8).item() > 0


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 16])
def test_matches_numpy_reference(bits: int) -> None:
    generator = torch.Generator().manual_seed(bits)
    x = torch.randn(1000, generator=generator, dtype=torch.float64) * 3
    scale = 2.0 / qmax(bits)
    expected = _numpy_reference(x.numpy(), scale, bits)
    np.testing.assert_allclose(fake_quantize(x, scale, bits).numpy(), expected, rtol=0, atol=1e-12)


def test_round_half_to_even_on_ties() -> None:
    # 0.5 and 2.5 steps tie: half to even gives 0 and 2, half away would give 1 and 3.
    out = fake_quantize(torch.tensor([0.5, 1.5, 2.5, -0.5]), 1.0, 8)
    assert out.tolist() == [0.0, 2.0, 2.0, -0.0]


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_values_lie_on_the_integer_grid_and_are_clamped(bits: int) -> None:
    scale = 0.25
    x = torch.linspace(-1e5, 1e5, 20001, dtype=torch.float64)
    levels = fake_quantize(x, scale, bits) / scale
    assert torch.equal(levels, levels.round())
    assert levels.min().item() == -(2 ** (bits - 1))
    assert levels.max().item() == 2 ** (bits - 1) - 1


def test_per_channel_scale_broadcasts() -> None:
    x = torch.tensor([[0.3, 1.0, -5.0], [0.3, 1.0, -5.0]])
    scale = torch.tensor([[0.1], [1.0]])
    out = fake_quantize(x, scale, 4)
    expected = torch.tensor([[0.3, 0.7, -0.8], [0.0, 1.0, -5.0]])
    torch.testing.assert_close(out, expected)


def test_straight_through_gradient_is_one_inside_zero_outside() -> None:
    # 4 bits, scale 1: the grid is -8..7; 7.4 rounds to 7 (inside), 7.6 to 8 (clamped).
    x = torch.tensor([-9.0, -8.2, -3.3, 0.0, 2.6, 7.4, 7.6, 20.0], requires_grad=True)
    scale = torch.tensor(1.0, requires_grad=True)
    out = fake_quantize(x, scale, 4)
    (out * torch.arange(1.0, 9.0)).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]
    assert scale.grad is None


def test_no_grad_path_equals_autograd_path() -> None:
    x = torch.randn(257, requires_grad=True)
    with_graph = fake_quantize(x, 0.05, 4)
    with torch.no_grad():
        without_graph = fake_quantize(x, 0.05, 4)
    torch.testing.assert_close(with_graph.detach(), without_graph)


def test_half_precision_input_keeps_its_dtype() -> None:
    x = torch.tensor([1000.3, -0.25], dtype=torch.float16)
    out = fake_quantize(x, 1.0, 16)
    assert out.dtype == torch.float16
    assert out.tolist() == [1000.0, -0.0]


def test_asymmetric_params_cover_the_range_with_an_integer_zero_point() -> None:
    # [-1, 14] at 4 bits: 15 steps of 1.0, zero at level 1.
    scale, zero_point = asymmetric_params(-1.0, 14.0, 4)
    assert scale.item() == pytest.approx(1.0)
    assert zero_point == 1
    # A range that excludes 0 is widened to include it: [0, 3] from [1, 3].
    scale, zero_point = asymmetric_params(1.0, 3.0, 2)
    assert (scale.item(), zero_point) == (pytest.approx(1.0), 0)


def test_fake_quantize_asymmetric_by_hand() -> None:
    x = torch.tensor([-3.0, -1.2, -0.4, 0.0, 0.6, 2.2, 20.0])
    # scale 0.5, zero point 2 at 3 bits: levels -2 .. 5, values -1.0 .. 2.5
    out = fake_quantize_asymmetric(x, 0.5, 2, 3)
    assert out.tolist() == [-1.0, -1.0, -0.5, 0.0, 0.5, 2.0, 2.5]
    with pytest.raises(ValueError, match="zero_point must be an integer from 0 to 7 at 3 bits"):
        fake_quantize_asymmetric(x, 0.5, 8, 3)


def test_fake_quantize_asymmetric_gradient_is_straight_through_inside_the_range() -> None:
    x = torch.tensor([-3.0, 0.6, 20.0], requires_grad=True)
    fake_quantize_asymmetric(x, 0.5, 2, 3).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
