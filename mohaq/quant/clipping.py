"""Clipping thresholds: the magnitude a symmetric quantizer maps to its largest integer.

MOHAQ chooses weight thresholds by minimum mean squared error (MMSE): build a
histogram of ``|x|``, try thresholds ``fraction * max|x|`` for fractions 0.01
to 0.99, and keep the one whose quantization error, estimated from the
histogram, is smallest. Max (``minmax``) and percentile clipping are the
cheap alternatives.

Every estimator returns a positive float tensor: a scalar for the whole tensor
or, with ``channel_axis``, one value per channel (shape ``(channels,)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from mohaq.quant.functional import MIN_THRESHOLD, qmax, qmin

ClippingMethod = Literal["minmax", "mmse", "percentile"]
CLIPPING_METHODS: tuple[str, ...] = get_args(ClippingMethod)

DEFAULT_NUM_BINS = 2048


def default_fractions() -> Tensor:
    """Candidate thresholds as fractions of max|x|: 0.01, 0.02, ..., 1.00.

    MOHAQ searches 0.01 to 0.99; 1.0 (no clipping) is added because at high
    precision clipping even the top 1% of the range costs more than it saves.
    """
    return torch.arange(1, 101, dtype=torch.float64) / 100


def _channels_first(x: Tensor, channel_axis: int | None) -> Tensor:
    """``|x|`` as a 2-D tensor: one row per channel, or a single row."""
    magnitude = x.detach().abs()
    if not magnitude.is_floating_point():
        magnitude = magnitude.to(torch.float32)
    if channel_axis is None:
        return magnitude.reshape(1, -1)
    if x.dim() == 0:
        raise ValueError("channel_axis needs a tensor with at least one dimension")
    axis = channel_axis if channel_axis >= 0 else channel_axis + x.dim()
    if not 0 <= axis < x.dim():
        raise ValueError(
            f"channel_axis {channel_axis} is out of range for a tensor with {x.dim()} dimensions"
        )
    return magnitude.movedim(axis, 0).reshape(x.shape[axis], -1)


def _result(rows: Tensor, channel_axis: int | None) -> Tensor:
    rows = rows.clamp_min(MIN_THRESHOLD)
    return rows[0] if channel_axis is None else rows


def minmax_threshold(x: Tensor, channel_axis: int | None = None) -> Tensor:
    """``max|x|`` over the tensor or per channel."""
    rows = _channels_first(x, channel_axis)
    if rows.shape[1] == 0:
        return _result(torch.zeros(rows.shape[0], device=rows.device), channel_axis)
    return _result(rows.amax(dim=1), channel_axis)


def percentile_threshold(
    x: Tensor, percentile: float = 99.99, channel_axis: int | None = None
) -> Tensor:
    """The ``percentile``-th percentile of ``|x|`` (nearest rank, no interpolation).

    Raises:
        ValueError: if ``percentile`` is not in (0, 100].
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    rows = _channels_first(x, channel_axis)
    count = rows.shape[1]
    if count == 0:
        return _result(torch.zeros(rows.shape[0], device=rows.device), channel_axis)
    rank = min(count, max(1, math.ceil(percentile / 100 * count)))
    return _result(rows.kthvalue(rank, dim=1).values, channel_axis)


def _histogram_rows(
    rows: Tensor, upper: Tensor, num_bins: int, negative: Tensor | None = None
) -> Tensor:
    """Counts of each row of non-negative ``rows`` on ``num_bins`` equal bins over
    ``[0, upper]`` (the max lands in the last bin): shape ``(rows, bins)``, or
    ``(rows, 2, bins)`` split by the boolean mask ``negative``."""
    channels = rows.shape[0]
    sides = 1 if negative is None else 2
    total = channels * sides * num_bins
    # Bin positions are built in floating point and truncated once: integer
    # arithmetic on a million int64 indices costs more than the histogram.
    dtype = rows.dtype if total < 2**22 else torch.float64
    width = (upper / num_bins).clamp_min(torch.finfo(rows.dtype).tiny).unsqueeze(1)
    position = (rows / width).to(dtype).floor_().clamp_(0, num_bins - 1)
    if negative is not None:
        position.add_(negative.to(dtype), alpha=num_bins)
    if channels > 1:
        offsets = torch.arange(channels, device=rows.device, dtype=dtype) * (sides * num_bins)
        position += offsets.unsqueeze(1)
    index = position.long()
    hist = torch.bincount(index.reshape(-1), minlength=total)
    hist = hist.to(torch.float32)
    return (
        hist.reshape(channels, num_bins)
        if negative is None
        else hist.reshape(channels, 2, num_bins)
    )


def abs_histogram(
    x: Tensor, num_bins: int, channel_axis: int | None = None, *, split_sign: bool = False
) -> tuple[Tensor, Tensor]:
    """Histogram of ``|x|`` on ``num_bins`` equal bins over ``[0, max|x|]``.

    Args:
        x: the data.
        num_bins: number of bins.
        channel_axis: one histogram per channel along this axis.
        split_sign: count positive values (and zeros) and negative values
            separately: the histogram gets a dimension of size 2 before the
            bins (index 0: ``x >= 0``, index 1: ``x < 0``); their sum is the
            plain ``|x|`` histogram. The MMSE search uses it to clip the two
            sides where the quantizer does (``+qmax`` and ``-(qmax + 1)`` steps).

    Returns:
        ``(hist, max_abs)``: counts of shape ``([2,] num_bins)`` and a scalar
        max, or ``(channels, [2,] num_bins)`` and ``(channels,)`` with
        ``channel_axis``.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    rows = _channels_first(x, channel_axis)
    channels, count = rows.shape
    max_abs = rows.amax(dim=1) if count else torch.zeros(channels, device=rows.device)
    if not split_sign:
        hist = _histogram_rows(rows, max_abs, num_bins)
    else:
        signed = x.detach() if channel_axis is None else x.detach().movedim(channel_axis, 0)
        hist = _histogram_rows(rows, max_abs, num_bins, negative=signed.reshape(channels, -1) < 0)
    if channel_axis is None:
        return hist[0], max_abs[0]
    return hist, max_abs


def mmse_threshold_from_histogram(
    hist: Tensor,
    bin_edges_max: Tensor | float,
    bits: int,
    fractions: Sequence[float] | Tensor | None = None,
    *,
    split_sign: bool = False,
) -> Tensor:
    """The MMSE threshold of data summarized by a histogram of its magnitudes.

    Each bin's values are represented by the bin's centre; the error of a
    candidate threshold is the count-weighted squared difference between the
    centres and their quantized values (rounding error inside the range,
    clipping error beyond it). The grid is asymmetric: positive values clip at
    ``qmax`` steps (the threshold), negative ones at ``qmax + 1`` steps. With a
    plain ``|x|`` histogram half of each bin is taken to be negative; a
    ``split_sign`` histogram (see :func:`abs_histogram`) gives the sides
    exactly. Batched: leading dimensions of ``hist`` are independent
    histograms (channels or utterances).

    Args:
        hist: counts over equal bins on ``[0, bin_edges_max]``, shape
            ``(..., bins)``, or ``(..., 2, bins)`` with ``split_sign``.
        bin_edges_max: the upper edge of the last bin (max|x|), shape ``(...)``.
        bits: the bit width the threshold is for.
        fractions: candidate thresholds as fractions of ``bin_edges_max``;
            default 0.01 to 0.99 in steps of 0.01.
        split_sign: whether ``hist`` holds the positive and negative sides.

    Returns:
        The threshold, shape ``(...)``, positive.
    """
    top, bottom = qmax(bits), qmin(bits)
    hist = torch.as_tensor(hist)
    dtype = torch.float64 if hist.dtype == torch.float64 else torch.float32
    hist = hist.to(dtype)
    if split_sign:
        positive, negative = hist[..., 0, :], hist[..., 1, :]
    else:
        positive = negative = hist / 2
    upper = torch.as_tensor(bin_edges_max, device=hist.device).to(dtype)
    candidates = default_fractions() if fractions is None else torch.as_tensor(fractions)
    candidates = candidates.to(device=hist.device, dtype=dtype)
    num_bins = hist.shape[-1]
    # Centres as fractions of the upper edge, so one grid serves every histogram.
    centres = (torch.arange(num_bins, device=hist.device, dtype=dtype) + 0.5) / num_bins
    steps = (candidates / top).unsqueeze(1)  # (F, 1): the step as a fraction of the edge
    levels = torch.round(centres / steps)  # (F, B), magnitudes in steps
    error_positive = (centres - levels.clamp(max=top) * steps) ** 2
    error_negative = (centres - levels.clamp(max=-bottom) * steps) ** 2
    # (..., B) x (B, F) -> (..., F). The true error is this times upper^2, a
    # per-histogram constant that does not move the argmin.
    error = positive @ error_positive.T + negative @ error_negative.T
    best = error.argmin(dim=-1)
    return (candidates[best] * upper).clamp_min(MIN_THRESHOLD)


def mmse_threshold(
    x: Tensor,
    bits: int,
    channel_axis: int | None = None,
    num_bins: int = DEFAULT_NUM_BINS,
    fractions: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """MOHAQ's MMSE threshold: the candidate fraction of max|x| with least error.

    See :func:`mmse_threshold_from_histogram` for how the error is estimated.
    """
    hist, max_abs = abs_histogram(x, num_bins, channel_axis, split_sign=True)
    return mmse_threshold_from_histogram(hist, max_abs, bits, fractions, split_sign=True)


def estimate_threshold(
    x: Tensor,
    method: ClippingMethod,
    bits: int,
    *,
    channel_axis: int | None = None,
    percentile: float = 99.99,
    num_bins: int = DEFAULT_NUM_BINS,
) -> Tensor:
    """Dispatches to the estimator named by ``method``.

    Raises:
        ValueError: if ``method`` is not one of ``CLIPPING_METHODS``.
    """
    if method == "minmax":
        return minmax_threshold(x, channel_axis)
    if method == "percentile":
        return percentile_threshold(x, percentile, channel_axis)
    if method == "mmse":
        return mmse_threshold(x, bits, channel_axis, num_bins)
    raise ValueError(f"unknown clipping method {method!r}; allowed: {', '.join(CLIPPING_METHODS)}")


def percentile_from_histogram(
    hist: Tensor, bin_edges_max: Tensor | float, percentile: float = 99.99
) -> Tensor:
    """The ``percentile``-th percentile of ``|x|`` read from a histogram of it.

    Returns the upper edge of the first bin at which the cumulative count
    reaches ``percentile`` percent (so it never underestimates by more than a
    bin). Batched over leading dimensions like
    :func:`mmse_threshold_from_histogram`.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    hist = torch.as_tensor(hist).to(torch.float64)
    upper = torch.as_tensor(bin_edges_max, device=hist.device).to(torch.float64)
    cumulative = hist.cumsum(dim=-1)
    target = cumulative[..., -1:] * (percentile / 100)
    # A small tolerance keeps float round-off from pushing the rank one bin up.
    index = torch.searchsorted(cumulative, target * (1 - 1e-12)).squeeze(-1)
    index = index.clamp_(max=hist.shape[-1] - 1)
    return ((index + 1).to(torch.float64) / hist.shape[-1] * upper).clamp_min(MIN_THRESHOLD).float()


def pool_histograms(
    hist: Tensor, maxima: Tensor, num_bins: int | None = None
) -> tuple[Tensor, Tensor]:
    """Sums histograms that each cover their own range ``[0, maxima[i]]`` into one
    histogram over ``[0, max(maxima)]``.

    Counts inside a source bin are taken as spread evenly over it, so a source
    bin that straddles target bins is split between them in proportion.

    Args:
        hist: ``(N, ..., bins)`` counts (e.g. ``(N, 2, bins)`` split by sign).
        maxima: ``(N,)`` the upper edge of each histogram.
        num_bins: bins of the pooled histogram (default: the source's).

    Returns:
        ``(pooled, upper)``: counts of shape ``(..., num_bins)`` and the
        common upper edge, a scalar.

    Raises:
        ValueError: for an empty batch or mismatched shapes.
    """
    hist = torch.as_tensor(hist).to(torch.float64)
    maxima = torch.as_tensor(maxima).to(torch.float64).reshape(-1)
    if hist.shape[0] == 0 or hist.shape[0] != maxima.shape[0]:
        raise ValueError(
            f"pool_histograms needs N >= 1 histograms and N maxima; got {hist.shape[0]} "
            f"histograms and {maxima.shape[0]} maxima"
        )
    source_bins = hist.shape[-1]
    target_bins = source_bins if num_bins is None else int(num_bins)
    if target_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    upper = maxima.max().clamp_min(MIN_THRESHOLD)
    lead = hist.shape[1:-1]
    rows = hist.reshape(hist.shape[0], -1, source_bins)  # (N, S, B)
    cumulative = torch.cat((rows.new_zeros(rows.shape[:-1] + (1,)), rows.cumsum(-1)), dim=-1)
    # Target edges in units of each source histogram's bin width: (N, B' + 1).
    edges = torch.arange(target_bins + 1, dtype=torch.float64) * (upper / target_bins)
    width = (maxima / source_bins).clamp_min(torch.finfo(torch.float64).tiny)
    position = (edges.unsqueeze(0) / width.unsqueeze(1)).clamp(max=source_bins)
    index = position.floor().long().clamp(max=source_bins - 1)
    fraction = position - index.to(torch.float64)
    index = index.unsqueeze(1).expand(-1, rows.shape[1], -1)
    below = cumulative.gather(-1, index)
    within = rows.gather(-1, index) * fraction.unsqueeze(1)
    cdf = below + within  # (N, S, B' + 1): counts at or below each target edge
    pooled = cdf.diff(dim=-1).sum(dim=0).clamp_min(0.0)
    return pooled.reshape(lead + (target_bins,)).to(torch.float32), upper.to(torch.float32)


def side_maxima(hist: Tensor, upper: Tensor | float) -> tuple[Tensor, Tensor]:
    """Largest magnitudes of the negative and positive values of a split histogram
    (``(..., 2, bins)`` as :func:`abs_histogram` with ``split_sign``): the upper
    edge of each side's last non-empty bin (the exact ``upper`` for the side
    that holds it). Returns ``(negative, positive)``, each of shape ``(...)``."""
    hist = torch.as_tensor(hist)
    num_bins = hist.shape[-1]
    upper = torch.as_tensor(upper, dtype=torch.float32)
    occupied = hist > 0
    positions = torch.arange(1, num_bins + 1, device=hist.device)
    last = (occupied * positions).amax(dim=-1).to(torch.float32)  # (..., 2): 0 when empty
    edge = last / num_bins * upper.unsqueeze(-1)
    return edge[..., 1], edge[..., 0]


def _asymmetric_errors(
    positive: Tensor, negative: Tensor, lows: Tensor, highs: Tensor, bits: int
) -> Tensor:
    """Squared error (in units of the histogram's upper edge) of each candidate range.

    ``positive``/``negative``: ``(bins,)`` counts; ``lows``/``highs``: ``(C,)`` as
    fractions of the upper edge (``lows <= 0 <= highs``). Returns ``(C,)``.
    """
    levels = 2**bits - 1
    num_bins = positive.shape[-1]
    dtype = positive.dtype
    centres = (torch.arange(num_bins, dtype=dtype) + 0.5) / num_bins
    step = ((highs - lows) / levels).clamp_min(MIN_THRESHOLD).unsqueeze(1)  # (C, 1)
    zero = torch.round(-lows.unsqueeze(1) / step)
    error = torch.zeros(lows.shape[0], dtype=dtype)
    for sign, counts in ((1.0, positive), (-1.0, negative)):
        values = sign * centres  # (B,)
        quantized = (torch.round(values / step + zero).clamp(0, levels) - zero) * step
        error += ((values - quantized) ** 2) @ counts
    return error


def mmse_range_from_histogram(
    hist: Tensor, upper: Tensor | float, bits: int, *, steps: int = 20
) -> tuple[Tensor, Tensor]:
    """The ``[low, high]`` range of least squared error for the asymmetric grid.

    The data are summarized by a split-sign histogram (``(2, bins)``, index 0
    for ``x >= 0`` and 1 for ``x < 0``, on ``[0, upper]``). Candidates are
    ``low = -a * neg_max`` and ``high = b * pos_max`` (``neg_max``/``pos_max``:
    the largest magnitude on each side); ``a`` and ``b`` are searched on a grid
    of ``steps`` fractions, then refined around the best pair on a grid ten
    times finer. ``a = 0`` (an unsigned range) is a candidate.

    Returns:
        ``(low, high)`` scalars, ``low <= 0 <= high``.
    """
    hist = torch.as_tensor(hist).to(torch.float64)
    if hist.dim() != 2 or hist.shape[0] != 2:
        raise ValueError(
            f"expected a split-sign histogram of shape (2, bins), got {tuple(hist.shape)}"
        )
    upper_t = torch.as_tensor(upper, dtype=torch.float64)
    negative_max, positive_max = side_maxima(hist, 1.0)
    negative_max, positive_max = negative_max.double(), positive_max.double()
    if float(positive_max) <= 0 and float(negative_max) <= 0:
        return torch.tensor(0.0), torch.tensor(MIN_THRESHOLD)
    coarse = torch.arange(0, steps + 1, dtype=torch.float64) / steps

    def search(a_values: Tensor, b_values: Tensor) -> tuple[float, float]:
        a_grid, b_grid = torch.meshgrid(a_values, b_values, indexing="ij")
        lows = -a_grid.reshape(-1) * negative_max
        highs = b_grid.reshape(-1) * positive_max
        valid = (highs - lows) > 0
        error = _asymmetric_errors(hist[0], hist[1], lows, highs, bits)
        error = torch.where(valid, error, torch.full_like(error, float("inf")))
        best = int(error.argmin())
        return float(a_grid.reshape(-1)[best]), float(b_grid.reshape(-1)[best])

    a, b = search(coarse, coarse)
    fine = torch.arange(-steps, steps + 1, dtype=torch.float64) / (10 * steps)
    a, b = search((a + fine).clamp(0, 1).unique(), (b + fine).clamp(0, 1).unique())
    low = -a * negative_max * upper_t
    high = b * positive_max * upper_t
    return low.to(torch.float32), high.to(torch.float32)


def percentile_range_from_histogram(
    hist: Tensor, upper: Tensor | float, percentile: float = 99.99
) -> tuple[Tensor, Tensor]:
    """``[low, high]``: the ``100 - percentile`` and ``percentile`` percentiles of the
    signed values summarized by a split-sign histogram (``(2, bins)`` on ``[0, upper]``),
    each read at the outer edge of its bin."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    hist = torch.as_tensor(hist).to(torch.float64)
    num_bins = hist.shape[-1]
    upper_t = torch.as_tensor(upper, dtype=torch.float64)
    # Signed histogram on [-upper, upper]: the negative side reversed, then the positive.
    signed = torch.cat((hist[1].flip(0), hist[0]))
    cumulative = signed.cumsum(0)
    total = cumulative[-1]
    share = percentile / 100
    high_index = int(torch.searchsorted(cumulative, total * share * (1 - 1e-12)))
    low_index = int(torch.searchsorted(cumulative, total * (1 - share) * (1 + 1e-12), right=True))
    edges = (torch.arange(2 * num_bins + 1, dtype=torch.float64) - num_bins) / num_bins * upper_t
    high = edges[min(high_index + 1, 2 * num_bins)].clamp_min(0.0)
    low = edges[min(low_index, 2 * num_bins)].clamp_max(0.0)
    return low.to(torch.float32), high.to(torch.float32)
