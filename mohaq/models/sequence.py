"""Helpers for padded batches of sequences: masks and in-length reversal."""

from __future__ import annotations

import torch
from torch import Tensor


def step_mask(lengths: Tensor, steps: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, T)`` mask: 1 where ``t < lengths[b]``, else 0."""
    positions = torch.arange(steps, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).to(dtype)


def reverse_within_lengths(x: Tensor, lengths: Tensor, *, time_dim: int = 1) -> Tensor:
    """Reverses each sequence within its length along ``time_dim`` (batch-first
    ``(B, T, ...)`` by default, time-major ``(T, B, ...)`` with ``time_dim=0``).

    Padding positions stay where they are, so a backward direction never reads
    padding before the real frames.
    """
    if time_dim not in (0, 1):
        raise ValueError(f"time_dim must be 0 or 1, got {time_dim}")
    batch_dim = 1 - time_dim
    batch, steps = x.shape[batch_dim], x.shape[time_dim]
    positions = torch.arange(steps, device=x.device).expand(batch, steps)
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)
    if time_dim == 0:
        index = index.t()
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(time_dim, index)
