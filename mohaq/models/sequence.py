"""Helpers for padded batches of sequences: masks and in-length reversal."""

from __future__ import annotations

import torch
from torch import Tensor


def step_mask(lengths: Tensor, steps: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, T)`` mask: 1 where ``t < lengths[b]``, else 0."""
    positions = torch.arange(steps, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).to(dtype)


def reverse_within_lengths(batch_major: Tensor, lengths: Tensor) -> Tensor:
    """Reverses each sequence of a ``(B, T, ...)`` tensor within its length.

    Padding positions stay where they are, so a backward direction never reads
    padding before the real frames.
    """
    batch, steps = batch_major.shape[:2]
    positions = torch.arange(steps, device=batch_major.device).expand(batch, steps)
    lengths = lengths.to(batch_major.device)[:, None]
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)
    index = index.view(batch, steps, *([1] * (batch_major.dim() - 2))).expand_as(batch_major)
    return batch_major.gather(1, index)
