"""The proposer protocol, the registry, and each built-in algorithm."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import pytest
from test_search_fakes import FakeCostModel, fake_search, fake_workload

from mohaq.search import HAQ, NSGA2, AlgorithmError, Nevergrad, RandomSearch
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers import (
    AlgorithmOptions,
    Outcome,
    Proposer,
    ProposerContext,
    available_algorithms,
    build_proposer,
    register_proposer,
    resolve_algorithm,
)
from mohaq.search.proposers.registry import ProposerEntry, ProposerRegistry


def problem(**constraints: float) -> SearchProblem:
    return SearchProblem(
        workload=fake_workload(),
        cost_model=FakeCostModel(),
        objectives=["error", "speedup"],
        constraints=constraints,
    )


def context(seed: int = 0, **constraints: float) -> ProposerContext:
    return ProposerContext(problem=problem(**constraints), budget=60, workers=1, seed=seed)


def analytic_outcome(ctx: ProposerContext, genes: tuple[int, ...]) -> Outcome:
    bits = ctx.problem.assignment(genes).bits.values()
    error = sum(1 / b for b in bits) / len(bits)
    return ctx.problem.outcome(genes, error)


def drive(proposer: Proposer, ctx: ProposerContext, steps: int) -> list[tuple[int, ...]]:
    asked = []
    for _ in range(steps):
        (genes,) = proposer.ask(1)
        asked.append(genes)
        proposer.tell(genes, analytic_outcome(ctx, genes))
    return asked


def test_names_resolve_to_typed_options() -> None:
    assert resolve_algorithm("nsga2") == NSGA2()
    assert resolve_algorithm("NSGA2") == NSGA2()
    assert resolve_algorithm("random") == RandomSearch()
    assert resolve_algorithm("RandomSearch") == RandomSearch()  # ours, not nevergrad's
    assert resolve_algorithm("TwoPointsDE-LHS") == Nevergrad()
    assert resolve_algorithm("DE") == Nevergrad(optimizer="DE")
    assert resolve_algorithm(NSGA2(population=12)) == NSGA2(population=12)
    with pytest.raises(AlgorithmError, match=r"unknown algorithm 'simplex'; registered: .*nsga2 "):
        resolve_algorithm("simplex")
    with pytest.raises(AlgorithmError, match="unknown nevergrad optimizer 'Nope'"):
        Nevergrad(optimizer="Nope")
    with pytest.raises(AlgorithmError, match="NSGA2 population must be >= 2, got 1"):
        NSGA2(population=1)
    assert {"nevergrad", "nsga2", "random", "haq"} <= {e.name for e in available_algorithms()}


def test_registry_refuses_a_name_or_options_class_twice() -> None:
    registry = ProposerRegistry()

    @dataclass
    class Mine(AlgorithmOptions):
        pass

    @dataclass
    class Other(AlgorithmOptions):
        pass

    registry.register(ProposerEntry("mine", Proposer, Mine, "first"))
    with pytest.raises(AlgorithmError, match="'Mine' is already registered|already registered"):
        registry.register(ProposerEntry("MINE", Proposer, Other, "same name, other case"))
    with pytest.raises(AlgorithmError, match="already belongs to algorithm 'mine'"):
        registry.register(ProposerEntry("yours", Proposer, Mine, "same options class"))


#: HAQ on the fake platform (energy budget) with a small agent that learns within the test.
SMALL_HAQ = HAQ(budget_metric="energy", hidden=16, batch_size=16, warmup_episodes=4, max_replays=5)
ALGORITHMS = [Nevergrad(), NSGA2(population=8, offspring=3), RandomSearch(), SMALL_HAQ]


@pytest.mark.parametrize("options", ALGORITHMS)
def test_state_roundtrip_continues_identically(options: AlgorithmOptions) -> None:
    ctx = context(seed=3)
    original = build_proposer(options, ctx)
    drive(original, ctx, 11)
    copy = build_proposer(options, context(seed=99))
    copy.load_state_dict(pickle.loads(pickle.dumps(original.state_dict())))
    assert drive(original, ctx, 9) == drive(copy, ctx, 9)


@pytest.mark.parametrize("options", ALGORITHMS)
def test_proposals_are_valid_gene_vectors_and_seeded(options: AlgorithmOptions) -> None:
    ctx = context(seed=5)
    first = drive(build_proposer(options, ctx), ctx, 20)
    again = drive(build_proposer(options, context(seed=5)), ctx, 20)
    assert first == again
    assert all(len(g) == 8 and all(0 <= x < 4 for x in g) for g in first)


def test_nsga2_starts_from_the_baselines_and_adopts_repairs() -> None:
    ctx = context(seed=0)
    proposer = build_proposer(NSGA2(population=6, offspring=2), ctx)
    baselines = [(3,) * 8, (2,) * 8]
    for genes in baselines:
        proposer.tell(genes, analytic_outcome(ctx, genes))  # told before the first ask
    initial = proposer.ask(6)
    assert initial[:2] == baselines and len(set(initial)) == 6
    assert proposer.ask(1) == []  # the generation's outcomes are still missing
    repaired = (0,) * 8
    for genes in initial:
        proposer.tell(genes, analytic_outcome(ctx, repaired if genes == initial[5] else genes))
    population = proposer.algorithm.pop.get("X").astype(int).tolist()
    assert list(repaired) in population and list(initial[5]) not in population
    assert len(proposer.ask(2)) == 2  # the next generation's offspring


def test_nsga2_survival_prefers_feasible_by_constraint_domination() -> None:
    ctx = context(seed=0)
    proposer = build_proposer(NSGA2(population=2, offspring=1), ctx)
    good, bad = proposer.ask(2)
    proposer.tell(good, Outcome(good, (9.0, 9.0), violation=0.0))
    proposer.tell(bad, Outcome(bad, (0.0, -9.0), violation=1.0))
    (child,) = proposer.ask(1)
    proposer.tell(child, Outcome(child, (0.0, -9.0), violation=2.0))
    survivors = proposer.algorithm.pop.get("X").astype(int).tolist()
    assert list(good) in survivors and list(child) not in survivors


def test_random_search_draws_feasible_candidates() -> None:
    ctx = context(seed=1, max_memory_mb=12.0)
    asked = drive(build_proposer(RandomSearch(), ctx), ctx, 30)
    assert all(ctx.problem.is_feasible(g) for g in asked)


# -- a new algorithm is one file and one registration ----------------------------------------
@dataclass
class CountDown(AlgorithmOptions):
    """Proposes every gene at one choice, from the highest down (test algorithm).

    Args:
        start: the first choice index proposed.
    """

    start: int = 3


@register_proposer("test-countdown", options=CountDown, description="uniform vectors, high to low")
class CountDownProposer(Proposer):
    def __init__(self, options: CountDown, context: ProposerContext) -> None:
        super().__init__(options, context)
        self.next = options.start
        self.told: list[tuple[int, ...]] = []

    def ask(self, count: int) -> list[tuple[int, ...]]:
        asked = []
        while self.next >= 0 and len(asked) < count:
            asked.append((self.next,) * self.context.num_genes)
            self.next -= 1
        return asked

    def tell(self, genes: tuple[int, ...], outcome: Outcome) -> None:
        self.told.append(genes)

    def state_dict(self) -> dict[str, Any]:
        return {"next": self.next, "told": self.told}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next, self.told = state["next"], state["told"]


def test_a_registered_algorithm_runs_by_name_with_its_options(tmp_path) -> None:
    result = fake_search(tmp_path, algorithm="test-countdown", budget=10)
    # The four uniform baselines are the only vectors it proposes: nothing more to do.
    assert (
        len(result.records) == 4 and result.stopped_early == "the algorithm proposed nothing more"
    )
    other = fake_search(tmp_path / "b", algorithm=CountDown(start=1), budget=10)
    assert other.info.settings.to_dict()["algorithm"] == {
        "name": "test-countdown",
        "options": {"start": 1},
    }
