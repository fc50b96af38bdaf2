"""The search problem: pricing, cheap feasibility, repair, outcomes (hand-computed)."""

from __future__ import annotations

import pytest
from test_search_fakes import FakeCostModel, fake_workload

from mohaq.search.objectives import ObjectiveError
from mohaq.search.problem import SearchProblem


def problem(cost_model=None, **constraints: float) -> SearchProblem:
    return SearchProblem(
        workload=fake_workload(),
        cost_model=cost_model or FakeCostModel(),
        objectives=["error", "speedup"],
        constraints=constraints,
    )


def test_costs_are_exact_and_losses_negate_speedup() -> None:
    p = problem()
    eights = (2,) * 8  # index 2 of (2, 4, 8, 16)
    assert p.metrics(eights)["speedup"] == pytest.approx(2.0)
    assert p.cost_losses(eights) == pytest.approx((-2.0,))
    outcome = p.outcome(eights, 0.25)
    assert outcome.losses == pytest.approx((0.25, -2.0)) and outcome.violation == 0.0


def test_violation_amounts_are_relative_excesses() -> None:
    # Uniform 16 bits: memory_mb = 1000 * (10000 * 16 + 1600) / 8 / 2**20 = 19.26.
    p = problem(max_memory_mb=12.0, max_error=0.2)
    top = (3,) * 8
    memory = 1000 * (10000 * 16 + 1600) / 8 / 2**20
    assert not p.is_feasible(top)
    assert p.violation_amount(top, None) == pytest.approx((memory - 12) / 12)
    assert p.violation_amount(top, 0.3) == pytest.approx((memory - 12) / 12 + 0.1 / 0.2)
    assert "max_memory_mb: memory_mb = 19.26" in p.cheap_violations(top)[0]


def test_repair_lowers_the_biggest_savings_first_until_feasible() -> None:
    p = problem(max_memory_mb=12.0)
    repaired = p.repair((3,) * 8)
    assert repaired is not None and p.is_feasible(repaired)
    # Only weights cost memory; the largest layer (l3, 4000 params) goes down first.
    weights = repaired[1::2]
    assert all(a == 3 for a in repaired[0::2]) and weights[3] < 3
    assert p.repair((0,) * 8) == (0,) * 8  # already feasible: unchanged


def test_repair_of_a_platform_capacity_violation() -> None:
    # Capacity in real bytes: 16-bit weights take (10000 * 16 + 1600) / 8 = 20200 bytes.
    p = problem(FakeCostModel(memory_capacity_bytes=12000))
    repaired = p.repair((3,) * 8)
    assert repaired is not None and p.is_feasible(repaired)
    assert not p.is_feasible((3,) * 8)


def test_impossible_platform_capacity_fails_before_any_evaluation() -> None:
    with pytest.raises(ObjectiveError, match="even 2 bits everywhere breaks it"):
        problem(FakeCostModel(memory_capacity_bytes=100))


def test_baseline_plan_then_new_seeds() -> None:
    p = problem()
    plan = p.baseline_plan([(3,) * 8, (1, 2, 1, 2, 1, 2, 1, 2)])
    assert [label for _, _, label in plan] == [
        "uniform-16", "uniform-8", "uniform-4", "uniform-2", "seed-1",
    ]  # fmt: skip
    assert plan[-1][1] == "seed"
