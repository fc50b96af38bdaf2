"""Beacons of MOHAQ's beacon-based search: which solutions to retrain, and how
far a candidate is from one.

Distance (MOHAQ): precisions are mapped to levels (2, 4, 8, 16 bits -> 2, 3,
4, 5, i.e. ``log2(bits) + 1``) and the L1 distance between two assignments
is summed over the *weight* points only: the beacon's retrained weights are
what a candidate borrows, so only weight precisions decide whether they fit.

Selection: among the evaluated, feasible and "promising" solutions of the
inference-only stage (error and cost within the thresholds), those in the
first ``max_rank`` non-dominated ranks are candidates. The first beacon is the
rank-0 candidate with the highest error (the cheapest end of the front, where
retraining recovers the most); each next one is the candidate farthest (by
its minimum distance) from the beacons already chosen, at least
``min_separation`` from each, ties going to the lower rank, then the lower
error. Selection stops at ``num_beacons`` or when no candidate is far enough.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mohaq.quant.points import Workload
from mohaq.search.objectives import ERROR, Constraint, parse_constraints
from mohaq.search.pareto import non_dominated_sort
from mohaq.search.records import EvaluationRecord


class BeaconConfigError(ValueError):
    """An invalid beacon-stage setting."""


def precision_level(bits: int) -> float:
    """MOHAQ's precision level: ``log2(bits) + 1`` (2, 4, 8, 16 -> 2, 3, 4, 5).

    Raises:
        BeaconConfigError: if ``bits`` is not a positive integer.
    """
    if isinstance(bits, bool) or int(bits) != bits or bits < 1:
        raise BeaconConfigError(f"bits must be a positive integer, got {bits!r}")
    return math.log2(int(bits)) + 1.0


def weight_point_names(workload: Workload) -> tuple[str, ...]:
    """Names of the weight points, the coordinates of the beacon distance."""
    names = tuple(p.name for p in workload.points if p.kind == "weight")
    if not names:
        raise BeaconConfigError("the workload has no weight points: beacon distance is undefined")
    return names


def beacon_distance(
    bits_a: Mapping[str, int], bits_b: Mapping[str, int], weight_points: Sequence[str]
) -> float:
    """L1 distance between precision levels over ``weight_points``.

    Raises:
        BeaconConfigError: if an assignment leaves a weight point unset.
    """
    total = 0.0
    for name in weight_points:
        if name not in bits_a or name not in bits_b:
            raise BeaconConfigError(f"weight point {name!r} is missing from an assignment")
        total += abs(precision_level(bits_a[name]) - precision_level(bits_b[name]))
    return total


@dataclass(frozen=True)
class PromisingCriteria:
    """Which solutions are worth a beacon (MOHAQ: error under a bound, speedup
    and memory within limits).

    Attributes:
        constraints: parsed bounds on ``error`` and cost metrics
            (:func:`~mohaq.search.objectives.parse_constraints` syntax).
    """

    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        max_error: float | None = None,
        cost_limits: Mapping[str, float] | None = None,
        metric_names: Iterable[str] = (),
    ) -> PromisingCriteria:
        """From ``max_error`` and e.g. ``{"min_speedup": 4, "max_memory_mb": 2}``.

        Raises:
            ObjectiveError: for an unknown metric or a malformed bound.
        """
        bounds: dict[str, float] = dict(cost_limits or {})
        if max_error is not None:
            bounds["max_error"] = float(max_error)
        return cls(parse_constraints(bounds, metric_names))

    def holds(self, error: float, metrics: Mapping[str, float]) -> bool:
        for constraint in self.constraints:
            value = error if constraint.metric == ERROR else metrics.get(constraint.metric)
            if value is None or not constraint.satisfied(float(value)):
                return False
        return True

    def describe(self) -> list[str]:
        return [c.describe() for c in self.constraints]


def select_beacons(
    records: Sequence[EvaluationRecord],
    *,
    weight_points: Sequence[str],
    num_beacons: int = 4,
    max_rank: int = 2,
    min_separation: float = 1.0,
    promising: PromisingCriteria | None = None,
    exclude: Iterable[Mapping[str, int]] = (),
) -> list[EvaluationRecord]:
    """Chooses up to ``num_beacons`` records to retrain (see the module docstring).

    Args:
        records: the inference-only evaluations.
        weight_points: the distance's coordinates (:func:`weight_point_names`).
        num_beacons: at most this many.
        max_rank: candidates come from the first ``max_rank`` non-dominated ranks.
        min_separation: minimum distance between two chosen beacons (and
            between a chosen one and those in ``exclude``).
        promising: thresholds a candidate must meet (None: feasible is enough).
        exclude: bits of beacons that exist already (kept at a distance).

    Returns:
        The chosen records, in choice order.

    Raises:
        BeaconConfigError: for a non-positive count or rank, or a negative separation.
    """
    if num_beacons < 0:
        raise BeaconConfigError(f"num_beacons must be >= 0, got {num_beacons}")
    if max_rank < 1:
        raise BeaconConfigError(f"max_rank must be >= 1, got {max_rank}")
    if min_separation < 0:
        raise BeaconConfigError(f"min_separation must be >= 0, got {min_separation}")
    criteria = promising or PromisingCriteria()
    pool = [r for r in records if r.feasible and criteria.holds(r.error, r.metrics)]
    # One candidate per distinct assignment.
    unique: dict[tuple[tuple[str, int], ...], EvaluationRecord] = {}
    for record in pool:
        unique.setdefault(tuple(sorted(record.bits.items())), record)
    pool = list(unique.values())
    fronts = non_dominated_sort([r.losses for r in pool])
    rank_of: dict[int, int] = {}
    for rank, front in enumerate(fronts[:max_rank]):
        for i in front:
            rank_of[i] = rank
    candidates = sorted(rank_of, key=lambda i: (rank_of[i], pool[i].index))
    chosen: list[int] = []
    existing = [dict(bits) for bits in exclude]

    def gap(i: int) -> float:
        others = [pool[j].bits for j in chosen] + existing
        if not others:
            return math.inf
        return min(beacon_distance(pool[i].bits, other, weight_points) for other in others)

    while len(chosen) < num_beacons:
        left = [i for i in candidates if i not in chosen and gap(i) >= min_separation]
        if not left:
            break
        if not chosen and not existing:
            first_rank = [i for i in left if rank_of[i] == 0] or left
            best = max(first_rank, key=lambda i: (pool[i].error, -pool[i].index))
        else:
            best = max(left, key=lambda i: (gap(i), -rank_of[i], -pool[i].error, -pool[i].index))
        chosen.append(best)
    return [pool[i] for i in chosen]


def nearest(
    bits: Mapping[str, int],
    beacons: Sequence[tuple[str, Mapping[str, int]]],
    weight_points: Sequence[str],
) -> tuple[str, float] | None:
    """The nearest beacon ``(id, distance)`` among ``(id, bits)`` pairs (ties:
    first listed), or None when there is none."""
    best: tuple[str, float] | None = None
    for beacon_id, beacon_bits in beacons:
        distance = beacon_distance(bits, beacon_bits, weight_points)
        if best is None or distance < best[1]:
            best = (beacon_id, distance)
    return best
