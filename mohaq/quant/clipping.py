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
