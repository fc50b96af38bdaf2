"""HAQ: the DDPG agent, the budget and its enforcement, the proposer and its report."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
from test_proposers import SMALL_HAQ
from test_search_fakes import FakeCostModel, fake_search, fake_workload

from mohaq.hardware.base import CostModel, CostReport
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload
from mohaq.search import HAQ, AlgorithmError
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers import ProposerContext, build_proposer
from mohaq.search.proposers.haq import step_features
from mohaq.search.proposers.haq_agent import DDPGAgent, truncated_normal
from mohaq.search.proposers.haq_budget import (
    Budget,
    BudgetEnforcer,
    BudgetError,
    cheapest_assignment,
)
from mohaq.search.proposers.haq_sensitivity import AdditiveErrorModel


def small_haq(**changes) -> HAQ:
    """HAQ on the fake platform with a small, fast agent."""
    return dataclasses.replace(SMALL_HAQ, **changes)


def fake_problem(cost_model: CostModel | None = None, workload: Workload | None = None):
    return SearchProblem(
        workload=workload or fake_workload(),
        cost_model=cost_model or FakeCostModel(),
        objectives=["error", "energy"],
    )


# -- the agent ---------------------------------------------------------------------------------
def test_truncated_normal_stays_within_bounds_around_its_mean() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([truncated_normal(rng, 0.7, 0.1) for _ in range(2000)])
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert abs(draws.mean() - 0.7) < 0.01
    edge = np.array([truncated_normal(rng, 1.0, 0.5) for _ in range(2000)])
    assert edge.max() <= 1.0 and edge.min() >= 0.0 and edge.mean() < 0.8
    assert truncated_normal(rng, 0.3, 0.0) == 0.3


def test_agent_learns_a_toy_reward() -> None:
    """Three steps with distinct states; the reward peaks at actions 0.2, 0.8, 0.5."""
    targets = np.array([0.2, 0.8, 0.5], dtype=np.float32)
    states = np.eye(3, dtype=np.float32)
    agent = DDPGAgent(3, hidden=32, actor_lr=3e-3, critic_lr=3e-3, batch_size=32, seed=1)
    rng = np.random.default_rng(1)

    def reward(actions: np.ndarray) -> float:
        return -float(np.sum((actions - targets) ** 2))

    before = reward(np.array([agent.act(s) for s in states]))
    for episode in range(300):
        sigma = 0.5 * 0.98**episode
        actions = np.array([agent.explore(s, sigma, rng) for s in states], dtype=np.float32)
        agent.remember(states, actions, reward(actions))
        for _ in range(3):
            agent.update(rng)
    after = reward(np.array([agent.act(s) for s in states]))
    assert before < -0.1 and after > -0.04, (before, after)


def test_agent_state_round_trip_continues_identically() -> None:
    rng = np.random.default_rng(0)
    agent = DDPGAgent(4, hidden=8, batch_size=4, memory_size=32, seed=3)
    for _ in range(3):
        agent.remember(rng.random((4, 4), dtype=np.float32), rng.random(4), float(rng.random()))
        agent.update(rng)
    copy = DDPGAgent(4, hidden=8, batch_size=4, memory_size=32, seed=99)
    copy.load_state_dict(pickle.loads(pickle.dumps(agent.state_dict())))
    copy_rng = np.random.default_rng()
    copy_rng.bit_generator.state = rng.bit_generator.state
    for _ in range(3):
        assert agent.update(rng) and copy.update(copy_rng)
    probe = np.ones(4, dtype=np.float32)
    assert agent.act(probe) == copy.act(probe) != DDPGAgent(4, hidden=8, seed=3).act(probe)


# -- the budget ----------------------------------------------------------------------------------
def test_enforcement_by_hand_lowers_the_largest_saving_first() -> None:
    # Fake energy = sum of MACs x w x a / 1000, MACs 1000..4000 for l0..l3; uniform-8:
    # 640, budget 320. Without observations the step costs are the noise prior, equal
    # for every 8 -> 4 step, so the largest saving goes first: l3.input (128), l2.input
    # (96), then l1.input and l3.weight tie at 64 (the first gene wins), then l3.weight.
    problem = fake_problem()
    model = AdditiveErrorModel(8, problem.space.choices)
    cheapest, value = cheapest_assignment(problem, "energy")
    assert cheapest == (0,) * 8 and value == 40.0
    enforcer = BudgetEnforcer(problem, Budget("energy", 320.0), model, cheapest)
    genes = enforcer.enforce((2,) * 8)
    assert genes == (2, 2, 1, 2, 1, 2, 1, 1)
    assert problem.metrics(genes)["energy"] == 288.0
    assert enforcer.enforce((1,) * 8) == (1,) * 8  # already fits: unchanged


def test_enforcement_spares_the_genes_observed_to_be_sensitive() -> None:
    problem = fake_problem()
    model = AdditiveErrorModel(8, problem.space.choices)
    model.observe((3,) * 8, 0.10)
    model.observe((2,) * 8, 0.11)
    model.observe((2, 2, 2, 2, 2, 2, 1, 1), 0.40)  # lowering l3 hurts
    model.observe((1, 1, 1, 1, 1, 1, 2, 2), 0.12)  # lowering the others does not
    enforcer = BudgetEnforcer(problem, Budget("energy", 320.0), model, (0,) * 8)
    genes = enforcer.enforce((2,) * 8)
    assert genes[6:] == (2, 2) and problem.metrics(genes)["energy"] <= 320.0


class TableCost(CostModel):
    """One product whose latency is a table of (weight bits, input bits), not
    monotone: like a narrow recurrent layer on Bit Fusion, 2-bit inputs are slow."""

    name = "table"
    metric_names = ("latency",)
    TABLE = {(2, 2): 20.0, (2, 8): 5.0, (8, 2): 20.0, (8, 8): 10.0}

    def __init__(self) -> None:
        super().__init__(allowed_bits=(2, 8), baseline_bits=8)

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        bits = (assignment.bits["w"], assignment.bits["x"])
        return CostReport(self.name, {"latency": self.TABLE[bits]})


def test_enforcement_on_a_platform_whose_cost_rises_when_bits_fall() -> None:
    workload = Workload(
        (
            QuantPoint("x", "activation", "l"),
            QuantPoint("w", "weight", "l", params=4, macs_per_frame=4, input_point="x"),
        )
    )
    problem = SearchProblem(
        workload=workload, cost_model=TableCost(), objectives=["error", "latency"]
    )
    cheapest, value = cheapest_assignment(problem, "latency")
    assert (cheapest, value) == ((1, 0), 5.0)  # genes (x, w): 8-bit input, 2-bit weight
    enforcer = BudgetEnforcer(
        problem, Budget("latency", 6.0), AdditiveErrorModel(2, (2, 8)), cheapest
    )
    # From 2/2 bits no lowering is left; raising the input to 8 bits fits.
    assert enforcer.enforce((0, 0)) == (1, 0)
    assert enforcer.enforce((1, 1)) == (1, 0)


def test_budget_errors_name_what_is_wrong_and_what_is_allowed() -> None:
    context = ProposerContext(problem=fake_problem(), budget=30, workers=1, seed=0)
    with pytest.raises(
        BudgetError, match=r"'latency' is not a metric of fake; .*\['memory_mb', 'energy'\]"
    ):
        build_proposer(HAQ(budget_metric="latency"), context)
    with pytest.raises(BudgetError, match="'speedup': higher is better on fake"):
        build_proposer(HAQ(budget_metric="speedup"), context)
    with pytest.raises(
        BudgetError,
        match=r"energy <= 32 \(5% of uniform-8's 640\) cannot be met .* smallest achievable "
        r"energy is 40 \(6.2% of uniform-8\)",
    ):
        build_proposer(small_haq(budget_fraction=0.05), context)
    with pytest.raises(BudgetError, match="baseline_bits 6 is not one of the bit choices"):
        build_proposer(small_haq(baseline_bits=6), context)
    with pytest.raises(AlgorithmError, match="one of budget_fraction, budget_value and sweep"):
        HAQ(budget_fraction=0.5, sweep=[0.25, 0.5])
    with pytest.raises(AlgorithmError, match="HAQ noise_decay must be in"):
        HAQ(noise_decay=1.5)
    assert HAQ().fractions == [0.5] and HAQ(budget_value=3.0).fractions == []


def test_state_features_are_normalised_per_gene() -> None:
    features = step_features(fake_problem())
    assert features.shape == (8, 6)
    assert features.min() == 0.0 and features.max() == 1.0
    # l1.input and l1.weight share their product's sizes and differ in the kind.
    assert list(features[2, 2:]) == list(features[3, 2:])
    assert (features[2, 1], features[3, 1]) == (0.0, 1.0)


# -- searches ----------------------------------------------------------------------------------
def test_every_haq_proposal_fits_its_budget_and_the_report_says_so(tmp_path) -> None:
    result = fake_search(
        tmp_path, algorithm=small_haq(budget_fraction=0.3), objectives=["error", "energy"]
    )
    bound = 0.3 * 640
    proposals = [r for r in result.records if r.origin == "optimizer"]
    assert len(result.records) == 30 and len(proposals) == 26 and result.stopped_early is None
    assert all(r.metrics["energy"] <= bound for r in proposals)
    table = json.loads((tmp_path / "haq_budgets.json").read_text())
    (row,) = table["budgets"]
    best = min((r for r in result.records if r.metrics["energy"] <= bound), key=lambda r: r.error)
    assert row["bound"] == bound and row["best"]["index"] == best.index
    assert row["best_uniform"]["label"] == "uniform-4"  # uniform-4: energy 160
    assert table["proposals_over_the_loosest_budget"] == []
    assert "## Budgets (HAQ)" in (tmp_path / "summary.md").read_text()


def test_a_sweep_splits_the_evaluations_between_its_budgets(tmp_path) -> None:
    result = fake_search(
        tmp_path, algorithm=small_haq(sweep=[0.25, 0.5]), objectives=["error", "energy"], budget=24
    )
    proposals = [r for r in result.records if r.origin == "optimizer"]
    assert len(proposals) == 20
    assert all(r.metrics["energy"] <= 0.25 * 640 for r in proposals[:10])
    assert all(r.metrics["energy"] <= 0.5 * 640 for r in proposals[10:])
    assert any(r.metrics["energy"] > 0.25 * 640 for r in proposals[10:])
    rows = json.loads((tmp_path / "haq_budgets.json").read_text())["budgets"]
    assert [row["fraction"] for row in rows] == [0.25, 0.5]
    assert rows[0]["best"]["error"] >= rows[1]["best"]["error"]


def test_search_options_parse_from_the_command_line() -> None:
    from jsonargparse import ArgumentParser

    from mohaq.cli import MohaqTrainer
    from mohaq.search import SearchSettings
    from mohaq.search.settings import split_settings

    parser = ArgumentParser(exit_on_error=False)
    parser.add_method_arguments(MohaqTrainer, "search", skip={"model", "datamodule"})
    config = parser.parse_args([
        "--checkpoint", "c.ckpt", "--platform", "bitfusion",
        "--algorithm", "HAQ", "--algorithm.budget_metric", "energy",
        "--algorithm.sweep", "[0.25, 0.5]", "--algorithm.warmup_episodes", "10",
    ])  # fmt: skip
    values = parser.instantiate_classes(config).as_dict()
    settings = SearchSettings(**split_settings(values, SearchSettings))
    assert settings.algorithm == HAQ(budget_metric="energy", sweep=[0.25, 0.5], warmup_episodes=10)
    assert settings.algorithm_name == "haq"
    assert SearchSettings(algorithm="haq").algorithm == HAQ()
