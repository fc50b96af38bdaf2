"""The beacon-aware evaluator after a resume: the test re-score uses the beacon
the log says a record was scored with, not one created later."""

from __future__ import annotations

from pathlib import Path

from mohaq.beacons.evaluator import BeaconAwareEvaluator
from mohaq.beacons.store import BeaconStore
from mohaq.quant.assignment import BitAssignment
from mohaq.search.evaluators import TEST, AnalyticEvaluator
from mohaq.search.records import EvaluationRecord

POINTS = ("a.weight", "b.weight")


def by_weights(path: Path) -> AnalyticEvaluator:
    """b000's weights halve the error, b001's divide it by four."""
    return AnalyticEvaluator(scale=0.5 if path.parent.name == "b000" else 0.25, test_offset=0.0)


def test_a_resumed_record_is_rescored_with_the_beacon_it_was_scored_with(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    for bits in ({"a.weight": 16, "b.weight": 16}, {"a.weight": 4, "b.weight": 4}):
        beacon = store.add(bits)
        store.mark_running(beacon.id)
        store.weights_path(beacon.id).write_text("weights")
        store.mark_done(beacon.id, {})
    evaluator = BeaconAwareEvaluator(
        base=AnalyticEvaluator(test_offset=0.0), beacon_evaluator=by_weights, store=store,
        weight_points=POINTS, distance_threshold=10,
    )  # fmt: skip
    candidate = BitAssignment({"a.weight": 4, "b.weight": 8})  # nearer to b001 (4, 4)
    assert evaluator.evaluate(candidate, TEST).evaluator == "beacon:b001"
    # Logged before b001 existed, scored with b000: the re-score must agree with the log.
    logged = EvaluationRecord(
        index=5, bits=candidate.to_dict(), genes=[], objectives={}, losses=[], metrics={},
        error=0.1, feasible=True, evaluator="beacon:b000", extras={"beacon_distance": 3.0},
    )  # fmt: skip
    fresh = BeaconAwareEvaluator(
        base=AnalyticEvaluator(test_offset=0.0), beacon_evaluator=by_weights, store=store,
        weight_points=POINTS, distance_threshold=10,
    )  # fmt: skip
    fresh.remember(logged)
    result = fresh.evaluate(candidate, TEST)
    assert result.evaluator == "beacon:b000" and result.extras["beacon_distance"] == 3.0
    assert result.error == 0.5 * (1 / 4 + 1 / 8) / 2
    fresh.remember(EvaluationRecord(**{**logged.__dict__, "evaluator": "ptq", "extras": {}}))
    assert fresh.evaluate(candidate, TEST).evaluator == "ptq"


def test_every_result_carries_the_ptq_method(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    beacon = store.add({"a.weight": 4, "b.weight": 4})
    store.mark_running(beacon.id)
    store.weights_path(beacon.id).write_text("weights")
    store.mark_done(beacon.id, {})
    evaluator = BeaconAwareEvaluator(
        base=AnalyticEvaluator(test_offset=0.0), beacon_evaluator=by_weights, store=store,
        weight_points=POINTS, distance_threshold=1, method="best",
    )  # fmt: skip
    near = evaluator.evaluate(BitAssignment({"a.weight": 4, "b.weight": 8}))
    far = evaluator.evaluate(BitAssignment({"a.weight": 16, "b.weight": 16}))
    assert (near.evaluator, near.method) == ("beacon:b000", "best")
    assert (far.evaluator, far.method) == ("ptq", "best")
