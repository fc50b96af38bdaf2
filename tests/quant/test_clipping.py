from __future__ import annotations

import numpy as np
import pytest
import torch

from mohaq.quant.clipping import (
    abs_histogram,
    estimate_threshold,
    minmax_threshold,
    mmse_range_from_histogram,
    mmse_threshold,
    mmse_threshold_from_histogram,
    percentile_from_histogram,
    percentile_range_from_histogram,
    percentile_threshold,
    pool_histograms,
    side_maxima,
)
from mohaq.quant.functional import asymmetric_params, fake_quantize, fake_quantize_asymmetric, qmax


def _mse(x: torch.Tensor, threshold: float, bits: int) -> float:
    return (fake_quantize(x, threshold / qmax(bits), bits) - x).pow(2).mean().item()


def _gaussian(n: int = 200_000, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_minmax_per_tensor_and_per_channel() -> None:
    x = torch.tensor([[1.0, -3.0], [0.5, 2.0], [0.0, 0.0]])
    assert minmax_threshold(x).item() == 3.0
    per_row = minmax_threshold(x, channel_axis=0)
    assert per_row[:2].tolist() == [3.0, 2.0]
    assert per_row[2].item() > 0  # an all-zero channel still gets a positive threshold
    assert minmax_threshold(x, channel_axis=-1).tolist() == [1.0, 3.0]


def test_channel_axis_out_of_range() -> None:
    with pytest.raises(ValueError, match="channel_axis 2 is out of range"):
        minmax_threshold(torch.ones(2, 2), channel_axis=2)


def test_percentile_is_nearest_rank_of_magnitudes() -> None:
    x = -torch.arange(1.0, 101.0)  # |x| = 1..100
    assert percentile_threshold(x, 90).item() == 90.0
    assert percentile_threshold(x, 100).item() == 100.0
    assert percentile_threshold(x, 0.5).item() == 1.0
    rows = torch.stack([torch.arange(1.0, 11.0), 10 * torch.arange(1.0, 11.0)])
    assert percentile_threshold(rows, 50, channel_axis=0).tolist() == [5.0, 50.0]
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], got 0"):
        percentile_threshold(x, 0)


def test_percentile_from_histogram_is_within_a_bin() -> None:
    x = _gaussian()
    hist, top = abs_histogram(x, 1024)
    estimate = percentile_from_histogram(hist, top, 99.0).item()
    exact = percentile_threshold(x, 99.0).item()
    assert exact <= estimate <= exact + top.item() / 1024 + 1e-9


def test_histogram_counts_every_value_once() -> None:
    x = torch.tensor([0.0, 0.1, -0.5, 0.99, 1.0, -1.0])
    hist, top = abs_histogram(x, 4)
    assert top.item() == 1.0
    assert hist.tolist() == [2.0, 0.0, 1.0, 3.0]  # max lands in the last bin


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_mmse_beats_minmax_on_a_gaussian(bits: int) -> None:
    x = _gaussian()
    threshold = mmse_threshold(x, bits)
    top = x.abs().max().item()
    assert 0 < threshold.item() < top
    assert _mse(x, threshold.item(), bits) < _mse(x, top, bits)


def test_mmse_at_4_bits_is_near_the_known_gaussian_optimum() -> None:
    # The MSE-optimal 4-bit clipping of a unit Gaussian is about 2.5 standard deviations.
    threshold = mmse_threshold(_gaussian(), 4).item()
    assert 2.2 < threshold < 2.9


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_mmse_from_histogram_agrees_with_brute_force_on_exact_values(bits: int) -> None:
    x = _gaussian(50_000, seed=bits)
    values = x.numpy()
    top = np.abs(values).max()
    fractions = np.arange(1, 100) / 100
    errors = []
    for fraction in fractions:
        scale = fraction * top / qmax(bits)
        quantized = np.clip(np.round(values / scale), -(2 ** (bits - 1)), qmax(bits)) * scale
        errors.append(np.mean((quantized - values) ** 2))
    exact = fractions[int(np.argmin(errors))] * top
    estimate = mmse_threshold(x, bits).item()
    # Within one candidate step (0.01 max|x|), and nearly as good as the exact best.
    assert abs(estimate - exact) <= 0.01 * top + 1e-9
    assert _mse(x, estimate, bits) <= min(errors) * 1.01


def test_mmse_from_histogram_is_batched() -> None:
    x = torch.stack([_gaussian(20_000, 1), 3 * _gaussian(20_000, 2)])
    hist, top = abs_histogram(x, 512, channel_axis=0)
    together = mmse_threshold_from_histogram(hist, top, 4)
    alone = [mmse_threshold_from_histogram(hist[i], top[i], 4).item() for i in range(2)]
    assert together.tolist() == pytest.approx(alone)
    assert together.tolist() == pytest.approx(
        mmse_threshold(x, 4, channel_axis=0, num_bins=512).tolist()
    )


def test_mmse_of_all_zeros_is_positive() -> None:
    assert mmse_threshold(torch.zeros(10), 4).item() > 0


def test_estimate_threshold_dispatches_and_names_the_methods() -> None:
    x = _gaussian()
    assert estimate_threshold(x, "minmax", 4).item() == minmax_threshold(x).item()
    assert estimate_threshold(x, "mmse", 4).item() == mmse_threshold(x, 4).item()
    assert estimate_threshold(x, "percentile", 4, percentile=99.0).item() == (
        percentile_threshold(x, 99.0).item()
    )
    with pytest.raises(ValueError, match="'kl'.*allowed: minmax, mmse, percentile"):
        estimate_threshold(x, "kl", 4)  # type: ignore[arg-type]


def test_sign_split_histogram_sums_to_the_magnitude_histogram() -> None:
    x = torch.tensor([[0.0, -0.2, 0.2, -1.0], [3.0, -3.0, -1.0, 0.5]])
    hist, top = abs_histogram(x, 2, channel_axis=0, split_sign=True)
    assert top.tolist() == [1.0, 3.0]
    # rows: (channel, side, bin); side 0 holds x >= 0, side 1 holds x < 0
    assert hist.tolist() == [[[2.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]]
    plain, _ = abs_histogram(x, 2, channel_axis=0)
    assert torch.equal(hist.sum(dim=1), plain)


def test_two_bit_grid_clips_negative_values_one_step_further() -> None:
    # At 2 bits the grid is -2..1 steps, so negative data reaches twice as far
    # as positive data for the same threshold: its MMSE threshold is lower.
    positive = torch.linspace(0.0, 1.0, 1001)
    assert mmse_threshold(-positive, 2).item() < mmse_threshold(positive, 2).item()


def test_pooled_histogram_rebins_each_source_onto_the_common_range() -> None:
    # A: 2 bins on [0, 2] -> both inside the first target bin [0, 2];
    # B: 2 bins on [0, 4] -> one count per target bin;
    # C: 2 bins on [0, 3], 3 counts each: the target edge 2 lies 1/3 into C's
    #    second bin [1.5, 3], so 3 + 1 counts fall below it and 2 above.
    hist = torch.tensor([[2.0, 4.0], [1.0, 1.0], [3.0, 3.0]])
    pooled, upper = pool_histograms(hist, torch.tensor([2.0, 4.0, 3.0]))
    assert upper.item() == 4.0
    torch.testing.assert_close(pooled, torch.tensor([11.0, 3.0]))


def test_pooled_histogram_keeps_leading_dimensions_and_equal_ranges_add_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, generator=generator), torch.randn(700, generator=generator)
    top = x.abs().max()
    y = y.clamp(-top, top)
    y[0] = top  # the same max|x| on both: the bins coincide
    hx, mx = abs_histogram(x, 64, split_sign=True)
    hy, my = abs_histogram(y, 64, split_sign=True)
    assert mx == my
    pooled, upper = pool_histograms(torch.stack((hx, hy)), torch.stack((mx, my)))
    assert pooled.shape == (2, 64)
    torch.testing.assert_close(pooled, hx + hy)
    assert pooled.sum().item() == 1200


def test_side_maxima_read_each_sides_last_occupied_bin() -> None:
    hist = torch.tensor([[1.0, 0.0, 2.0, 5.0], [3.0, 1.0, 0.0, 0.0]])  # (positive, negative)
    negative, positive = side_maxima(hist, 8.0)
    assert (negative.item(), positive.item()) == (4.0, 8.0)


def _asymmetric_mse(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bits: int) -> float:
    scale, zero_point = asymmetric_params(low, high, bits)
    return (fake_quantize_asymmetric(x, scale, zero_point, bits) - x).pow(2).mean().item()


def test_mmse_range_of_non_negative_data_is_unsigned_and_beats_the_symmetric_grid() -> None:
    x = torch.empty(20_000).exponential_(generator=torch.Generator().manual_seed(0))
    hist, top = abs_histogram(x, 1024, split_sign=True)
    low, high = mmse_range_from_histogram(hist, top, 4)
    assert low.item() == 0.0
    assert 0 < high.item() < top.item()
    symmetric = _mse(x, mmse_threshold(x, 4).item(), 4)
    assert _asymmetric_mse(x, low, high, 4) < 0.5 * symmetric


def test_mmse_range_is_near_the_best_of_a_brute_force_search() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.cat(
        (torch.randn(6000, generator=generator) * 0.3, torch.rand(4000, generator=generator) * 3)
    )
    hist, top = abs_histogram(x, 1024, split_sign=True)
    low, high = mmse_range_from_histogram(hist, top, 3)
    lows = torch.linspace(x.min().item(), 0, 41)
    highs = torch.linspace(0.05, x.max().item(), 41)
    best = min(_asymmetric_mse(x, a, b, 3) for a in lows for b in highs)
    assert _asymmetric_mse(x, low, high, 3) <= best * 1.03


def test_percentile_range_reads_both_tails() -> None:
    x = torch.arange(-20.0, 80.0)  # 100 values, one per unit
    hist, top = abs_histogram(x, 2048, split_sign=True)
    low, high = percentile_range_from_histogram(hist, top, 90.0)
    bin_width = top.item() / 2048
    # The 10th and 90th percentiles of -20..79 lie at -10 and 70 (to within a value).
    assert -11.0 - bin_width <= low.item() <= -10.0 + bin_width
    assert 69.0 - bin_width <= high.item() <= 70.0 + bin_width
    low, high = percentile_range_from_histogram(hist, top, 100.0)
    assert low.item() == pytest.approx(-20.0, abs=bin_width)
    assert high.item() == pytest.approx(79.0, abs=bin_width)
