import pytest
from test_search_fakes import FakeCostModel, fake_search

from mohaq.search.evaluators import AnalyticEvaluator
from mohaq.search.objectives import ObjectiveError, ObjectiveSet, parse_constraints

METRICS = ("speedup", "memory_mb", "energy")


def test_constraint_keys_parse() -> None:
    parsed = parse_constraints({"max_error": 0.24, "max_memory_mb": 6, "speedup>=": 2}, METRICS)
    assert [c.describe() for c in parsed] == ["error <= 0.24", "memory_mb <= 6", "speedup >= 2"]
    assert [c.cheap for c in parsed] == [False, True, True]


def test_unknown_constraint_metric_lists_valid() -> None:
    with pytest.raises(
        ObjectiveError, match=r"'latency'.*valid: \['error', 'speedup', 'memory_mb', 'energy'\]"
    ):
        parse_constraints({"max_latency": 3}, METRICS)


def test_error_bound_is_a_fraction() -> None:
    with pytest.raises(ObjectiveError, match="fraction"):
        parse_constraints({"max_error": 24}, METRICS)


def test_objectives_validated_and_maximized_negated() -> None:
    objectives = ObjectiveSet(["error", "speedup"], FakeCostModel())
    assert objectives.losses({"error": 0.2, "speedup": 3.0}) == [0.2, -3.0]
    with pytest.raises(ObjectiveError, match=r"\['latency'\] not provided by the platform; valid"):
        ObjectiveSet(["error", "latency"], FakeCostModel())


def test_impossible_memory_constraint_raises_before_evaluating(tmp_path) -> None:
    evaluator = AnalyticEvaluator()
    # All-2-bit memory of the fake model: 1000 * (10000*2 + 1600) / 8 / 2**20 = 2.575 MB.
    with pytest.raises(
        ObjectiveError, match=r"max_memory_mb.*best achievable memory_mb .* is 2\.57"
    ):
        fake_search(tmp_path, evaluator=evaluator, constraints={"max_memory_mb": 1.0}, budget=10)
    assert evaluator.calls == 0 and not (tmp_path / "evaluations.jsonl").exists()
