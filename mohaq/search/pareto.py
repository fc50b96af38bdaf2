"""Pareto dominance, non-dominated sorting, hypervolume (pymoo) and an
incremental archive of the feasible front.

All functions take losses (lower is better in every coordinate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True if ``a`` is no worse than ``b`` everywhere and better somewhere."""
    better = False
    for x, y in zip(a, b, strict=True):
        if x > y:
            return False
        if x < y:
            better = True
    return better


def non_dominated_sort(losses: Sequence[Sequence[float]]) -> list[list[int]]:
    """Fronts of indices (front 0 is the Pareto set), each sorted; pymoo's sort.
    Equal loss vectors share a front."""
    if len(losses) == 0:
        return []
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    fronts = NonDominatedSorting().do(np.asarray(losses, dtype=float))
    return [sorted(int(i) for i in front) for front in fronts]


def pareto_indices(losses: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points; of equal loss vectors only the first."""
    fronts = non_dominated_sort(losses)
    if not fronts:
        return []
    seen: set[tuple[float, ...]] = set()
    kept = []
    for i in fronts[0]:
        key = tuple(float(x) for x in losses[i])
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept


def hypervolume(losses: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``losses`` up to ``reference`` (pymoo's HV);
    points not strictly better than the reference in every coordinate add nothing."""
    ref = np.asarray(reference, dtype=float)
    inside = [p for p in (np.asarray(q, dtype=float) for q in losses) if np.all(p < ref)]
    if not inside:
        return 0.0
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=ref)(np.asarray(inside)))


class ParetoArchive(Generic[T]):
    """The non-dominated items seen so far, kept up to date one item at a time
    (O(front size) per item), so a search never re-sorts its whole history.

    Of items with equal losses the first is kept.

    Args:
        losses_of: an item's loss vector.
    """

    def __init__(self, losses_of: Callable[[T], Sequence[float]]) -> None:
        self.losses_of = losses_of
        self._items: list[T] = []

    def add(self, item: T) -> bool:
        """Adds ``item`` if nothing in the archive dominates or equals it; drops
        what it dominates. Returns whether it entered the front."""
        losses = tuple(self.losses_of(item))
        kept = []
        for other in self._items:
            other_losses = tuple(self.losses_of(other))
            if other_losses == losses or dominates(other_losses, losses):
                return False
            if not dominates(losses, other_losses):
                kept.append(other)
        kept.append(item)
        self._items = kept
        return True

    def items(self) -> list[T]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def hypervolume(self, reference: Sequence[float]) -> float:
        return hypervolume([self.losses_of(i) for i in self._items], reference)
