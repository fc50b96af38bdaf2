"""Beacon distance and selection, with hand-computed values."""

from __future__ import annotations

import pytest
from test_search_fakes import fake_workload

from mohaq.beacons.selection import (
    BeaconConfigError,
    PromisingCriteria,
    beacon_distance,
    nearest,
    precision_level,
    select_beacons,
    weight_point_names,
)
from mohaq.search.objectives import ObjectiveError
from mohaq.search.records import EvaluationRecord

WEIGHTS = ("l0.weight", "l1.weight", "l2.weight", "l3.weight")


def bits(*widths: int, activation: int = 16) -> dict[str, int]:
    out = {}
    for i, w in enumerate(widths):
        out[f"l{i}.input"] = activation
        out[f"l{i}.weight"] = w
    return out


def record(
    index: int, widths: tuple[int, ...], error: float, speedup: float, **kw
) -> EvaluationRecord:
    return EvaluationRecord(
        index=index, bits=bits(*widths), genes=[], objectives={"error": error, "speedup": speedup},
        losses=[error, -speedup], metrics={"speedup": speedup, "memory_mb": kw.pop("memory", 1.0)},
        error=error, feasible=kw.pop("feasible", True),
    )  # fmt: skip


def test_levels_and_distance_by_hand() -> None:
    assert [precision_level(b) for b in (2, 4, 8, 16)] == [2, 3, 4, 5]
    assert weight_point_names(fake_workload()) == WEIGHTS
    # |5-2| + |5-3| + |5-4| + |5-5| = 6; activations do not count.
    assert beacon_distance(bits(16, 16, 16, 16), bits(2, 4, 8, 16, activation=2), WEIGHTS) == 6
    assert beacon_distance(bits(4, 4, 4, 4), bits(4, 4, 4, 4, activation=2), WEIGHTS) == 0
    with pytest.raises(BeaconConfigError, match="weight point 'l3.weight' is missing"):
        beacon_distance(bits(2, 2, 2), bits(2, 2, 2, 2), WEIGHTS)
    with pytest.raises(BeaconConfigError, match="positive integer, got 0"):
        precision_level(0)


def test_nearest_beacon() -> None:
    beacons = [("b0", bits(16, 16, 16, 16)), ("b1", bits(4, 4, 4, 4)), ("b2", bits(4, 4, 4, 8))]
    assert nearest(bits(4, 4, 4, 2), beacons, WEIGHTS) == ("b1", 1.0)  # b2: 1 + 2 = 3
    assert nearest(bits(8, 8, 8, 8), beacons, WEIGHTS) == ("b2", 3.0)  # b1: 4, b2: 3, b0: 4
    assert nearest(bits(8, 8, 8, 8), [], WEIGHTS) is None


def test_selection_spreads_over_the_first_ranks() -> None:
    records = [
        record(0, (16, 16, 16, 16), 0.10, 1.0),  # rank 0
        record(1, (8, 8, 8, 8), 0.12, 2.0),  # rank 0
        record(2, (4, 4, 4, 4), 0.20, 4.0),  # rank 0
        record(3, (2, 2, 2, 2), 0.45, 8.0),  # rank 0, highest error
        record(4, (2, 2, 2, 4), 0.46, 7.0),  # rank 1
        record(5, (8, 8, 8, 16), 0.30, 1.5),  # rank 1 (dominated by 1)
        record(6, (2, 4, 2, 4), 0.70, 5.0),  # rank 2 (dominated by 4)
        record(7, (2, 2, 2, 2), 0.01, 99.0, feasible=False),  # infeasible: never
    ]
    # First: the rank-0 record with the highest error (3). Then the farthest:
    # 16-bit (index 0) at distance 12 from it, then 8-bit (4 from 0, 8 from 3)
    # at min-distance 4 against 4-bit (min(4, 8)=4): tie broken by lower error.
    chosen = select_beacons(records, weight_points=WEIGHTS, num_beacons=3, min_separation=3)
    assert [r.index for r in chosen] == [3, 0, 1]
    # Separation 5: after 3 and 0 nothing is 5 away from both.
    chosen = select_beacons(records, weight_points=WEIGHTS, num_beacons=4, min_separation=5)
    assert [r.index for r in chosen] == [3, 0]
    # Only rank 0 and 1; rank-2 record 6 never chosen even with no separation.
    chosen = select_beacons(records, weight_points=WEIGHTS, num_beacons=10, min_separation=0)
    assert sorted(r.index for r in chosen) == [0, 1, 2, 3, 4, 5]
    # Beacons that exist already are kept at a distance.
    chosen = select_beacons(
        records, weight_points=WEIGHTS, num_beacons=1, min_separation=3, exclude=[bits(2, 2, 2, 2)]
    )
    assert [r.index for r in chosen] == [0]


def test_promising_thresholds_filter_candidates() -> None:
    records = [
        record(0, (16, 16, 16, 16), 0.10, 1.0),
        record(1, (4, 4, 4, 4), 0.20, 4.0),
        record(2, (2, 2, 2, 2), 0.45, 8.0),
    ]
    criteria = PromisingCriteria.parse(
        max_error=0.3, cost_limits={"min_speedup": 2}, metric_names=("speedup", "memory_mb")
    )
    assert criteria.describe() == ["speedup >= 2", "error <= 0.3"]
    assert criteria.holds(0.2, {"speedup": 4.0}) and not criteria.holds(0.35, {"speedup": 4.0})
    chosen = select_beacons(records, weight_points=WEIGHTS, promising=criteria, min_separation=0)
    assert [r.index for r in chosen] == [1]
    with pytest.raises(ObjectiveError, match="does not provide"):
        PromisingCriteria.parse(cost_limits={"min_latency": 2}, metric_names=("speedup",))


def test_bad_selection_settings() -> None:
    with pytest.raises(BeaconConfigError, match="num_beacons must be >= 0, got -1"):
        select_beacons([], weight_points=WEIGHTS, num_beacons=-1)
    with pytest.raises(BeaconConfigError, match="max_rank must be >= 1, got 0"):
        select_beacons([], weight_points=WEIGHTS, max_rank=0)
    assert select_beacons([], weight_points=WEIGHTS) == []
