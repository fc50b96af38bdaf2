"""Pareto dominance, non-dominated sorting, crowding distance and hypervolume.

All functions take losses (lower is better in every coordinate).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True if ``a`` is no worse than ``b`` everywhere and better somewhere."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a_arr <= b_arr) and np.any(a_arr < b_arr))


def non_dominated_sort(losses: Sequence[Sequence[float]]) -> list[list[int]]:
    """Fronts of indices (front 0 is the Pareto set), by Deb's fast sort."""
    points = np.asarray(losses, dtype=float)
    n = len(points)
    if n == 0:
        return []
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    counts = np.zeros(n, dtype=int)
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                counts[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                counts[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if counts[i] == 0]
    while current:
        fronts.append(current)
        following: list[int] = []
        for i in current:
            for j in dominated_by[i]:
                counts[j] -= 1
                if counts[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def pareto_indices(losses: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points; of equal loss vectors only the first."""
    fronts = non_dominated_sort(losses)
    if not fronts:
        return []
    seen: set[tuple[float, ...]] = set()
    kept = []
    for i in sorted(fronts[0]):
        key = tuple(float(x) for x in losses[i])
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept


def crowding_distance(losses: Sequence[Sequence[float]]) -> np.ndarray:
    """NSGA-II crowding distance of each point within one front (extremes: inf)."""
    points = np.asarray(losses, dtype=float)
    n = len(points)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for m in range(points.shape[1]):
        order = np.argsort(points[:, m], kind="stable")
        low, high = points[order[0], m], points[order[-1], m]
        distance[order[0]] = distance[order[-1]] = np.inf
        if high == low:
            continue
        gaps = (points[order[2:], m] - points[order[:-2], m]) / (high - low)
        distance[order[1:-1]] += gaps
    return distance


def hypervolume(losses: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``losses`` up to ``reference`` (nevergrad's
    HypervolumeIndicator); points not strictly better than the reference in
    every coordinate add nothing."""
    from nevergrad.optimization.multiobjective import HypervolumeIndicator

    ref = np.asarray(reference, dtype=float)
    inside = [
        np.asarray(p, dtype=float) for p in losses if np.all(np.asarray(p, dtype=float) < ref)
    ]
    if not inside:
        return 0.0
    return float(HypervolumeIndicator(ref).compute(inside))
