"""The surrogate algorithm: the expected hypervolume improvement against a
Monte Carlo estimate, probes, learning an interacting error, resume."""

from __future__ import annotations

import numpy as np
import pytest
from test_search_fakes import FakeCostModel, fake_search, fake_workload

from mohaq.search import AnalyticEvaluator, EvaluationResult
from mohaq.search.pareto import hypervolume
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers import ProposerContext, build_proposer
from mohaq.search.proposers.registry import AlgorithmError
from mohaq.search.proposers.surrogate import Surrogate, expected_hvi


def monte_carlo_ehvi(mean, std, costs, front, reference, draws=40000, seed=0):
    rng = np.random.default_rng(seed)
    base = hypervolume(front, reference)
    out = []
    for mu, sigma, cost in zip(mean, std, costs, strict=True):
        errors = rng.normal(mu, sigma, size=draws)
        gains = [
            hypervolume([*front, [e, *cost]], reference) - base for e in errors[:: draws // 400]
        ]
        out.append(np.mean(gains))
    return np.asarray(out)


@pytest.mark.parametrize("objectives", [2, 3])
def test_expected_improvement_matches_monte_carlo(objectives) -> None:
    rng = np.random.default_rng(objectives)
    reference = np.ones(objectives)
    front = rng.uniform(0.1, 0.9, size=(5, objectives))
    costs = rng.uniform(0.0, 1.0, size=(6, objectives - 1))
    mean = rng.uniform(0.0, 1.0, size=6)
    std = rng.uniform(0.02, 0.3, size=6)
    exact = expected_hvi(mean, std, costs, front, reference)
    estimate = monte_carlo_ehvi(mean, std, costs, front.tolist(), reference)
    assert exact == pytest.approx(estimate, abs=0.01)
    # A candidate beyond the reference in cost adds nothing.
    assert (
        expected_hvi(mean[:1], std[:1], np.full((1, objectives - 1), 2.0), front, reference)[0]
        == 0.0
    )


class Compounding(AnalyticEvaluator):
    """An error that compounds, like PER under quantization noise: per-point
    weights, noise power falling 4x per bit, and an increase that grows with
    the square of the summed degradation (additivity breaks at low bits)."""

    name = "compounding"
    WEIGHTS = (0.6, 0.05, 0.4, 0.05, 0.2, 0.02, 0.1, 0.02)

    def degradation(self, assignment) -> float:
        bits = assignment.bits.values()
        return sum(w * 4.0 ** (1 - np.log2(b)) for w, b in zip(self.WEIGHTS, bits, strict=True))

    def evaluate(self, assignment, split="optimization"):
        super().evaluate(assignment, split)
        d = self.degradation(assignment)
        return EvaluationResult(0.2 + d + 1.5 * d**2, evaluator=self.name)


def test_probes_come_first_and_infeasible_probes_are_measured(tmp_path) -> None:
    result = fake_search(
        tmp_path, algorithm=Surrogate(probe_choices=1, pool=200), budget=14,
        evaluator=Compounding(), constraints={"max_memory_mb": 15},
    )  # fmt: skip
    probes = [r for r in result.records if r.origin == "optimizer"][:8]
    assert [r.genes.count(0) for r in probes] == [1] * 8  # one gene lowered to 2 bits each
    assert all(r.genes.count(3) == 7 for r in probes)
    assert not all(r.feasible for r in probes)  # measured although over the memory bound
    assert all(r.feasible or r.origin != "optimizer" for r in result.records[12:])


def test_surrogate_beats_random_search_at_equal_budget(tmp_path) -> None:
    ratios = []
    for seed in range(2):
        surrogate = fake_search(
            tmp_path / f"s{seed}", algorithm=Surrogate(pool=400), seed=seed, budget=40,
            evaluator=Compounding(), rescore_test=False,
        )  # fmt: skip
        random = fake_search(
            tmp_path / f"r{seed}", algorithm="random", seed=seed, budget=40,
            evaluator=Compounding(), rescore_test=False,
        )  # fmt: skip
        ratios.append(surrogate.hypervolume / random.hypervolume)
    assert min(ratios) > 1.0, ratios


def test_the_surrogate_learns_the_interactions_the_additive_view_misses() -> None:
    problem = SearchProblem(
        workload=fake_workload(), cost_model=FakeCostModel(), objectives=["error", "speedup"]
    )
    context = ProposerContext(problem=problem, budget=80, workers=1, seed=0)
    proposer = build_proposer(Surrogate(pool=300), context)
    evaluator = Compounding()

    def error(genes):
        return evaluator.evaluate(problem.assignment(tuple(genes))).error

    top = (3,) * 8
    proposer.tell(top, problem.outcome(top, error(top)))
    for _ in range(50):
        (genes,) = proposer.ask(1)
        proposer.tell(genes, problem.outcome(genes, error(genes)))
    rng = np.random.default_rng(0)
    test = np.asarray([rng.integers(1, 4, size=8) for _ in range(300)])  # 4 bits and up
    truth = np.asarray([error(g) for g in test])
    mean, _ = proposer.predict(test)
    table = proposer._sensitivities()
    additive = error(top) + table[np.arange(8), test].sum(axis=1)
    assert np.mean(np.abs(mean - truth)) < 0.7 * np.mean(np.abs(additive - truth))
    assert np.corrcoef(mean, truth)[0, 1] > 0.98


def _driven(options: Surrogate, steps: int, seed: int = 0):
    """A surrogate proposer told ``steps`` of its own proposals on Compounding."""
    problem = SearchProblem(
        workload=fake_workload(), cost_model=FakeCostModel(), objectives=["error", "speedup"]
    )
    context = ProposerContext(problem=problem, budget=steps + 20, workers=1, seed=seed)
    proposer = build_proposer(options, context)
    evaluator = Compounding()

    def tell(genes) -> None:
        error = evaluator.evaluate(problem.assignment(tuple(genes))).error
        proposer.tell(genes, problem.outcome(genes, error))

    tell((3,) * 8)
    for _ in range(steps):
        (genes,) = proposer.ask(1)
        tell(genes)
    return proposer, tell


def test_the_process_is_fitted_on_at_most_max_points_anchors_and_best_ranks_first() -> None:
    from mohaq.search.pareto import non_dominated_sort

    proposer, _ = _driven(Surrogate(pool=100, max_points=30), steps=50)
    assert len(proposer.observed) == 51
    training = proposer._training_set()
    assert len(training) == 30
    kept = {o.genes for o in training}
    uniform = {g for g in proposer.observed if len(set(g)) == 1}
    anchors = proposer.probe_set | uniform
    assert (3,) * 8 in uniform and anchors <= kept  # the probes, the all-highest, baselines
    rest = [o for o in proposer.observed.values() if o.genes not in anchors]
    ranks = non_dominated_sort([o.losses for o in rest])
    # The places left: whole ranks, best first; no kept point ranks below a dropped one.
    rank_of = {rest[i].genes: r for r, members in enumerate(ranks) for i in members}
    kept_ranks = [rank_of[g] for g in kept - anchors]
    dropped_ranks = [rank_of[o.genes] for o in rest if o.genes not in kept]
    assert len(kept_ranks) == 30 - len(anchors) > 0
    assert max(kept_ranks) <= min(dropped_ranks)
    assert 0 in kept_ranks
    # Under the cap, everything is used.
    small, _ = _driven(Surrogate(pool=100), steps=20)
    assert len(small._training_set()) == len(small.observed)
    with pytest.raises(AlgorithmError, match="max_points must be >= 20, got 5"):
        Surrogate(max_points=5)
    with pytest.raises(AlgorithmError, match="refit_growth must be >= 0, got -0.1"):
        Surrogate(refit_growth=-0.1)


def test_hyperparameters_are_optimized_again_only_after_the_data_grew() -> None:
    proposer, tell = _driven(Surrogate(pool=100, refit_growth=0.2), steps=25)
    proposer._fit()
    size, kernel = proposer._kernel_size, proposer._kernel
    assert size == len(proposer.observed)
    assert proposer._model[0].optimizer is not None
    grown = []
    while True:
        (genes,) = proposer.ask(1)
        tell(genes)
        if len(proposer.observed) >= 1.2 * size:
            break
        proposer._fit()
        assert proposer._model_size == len(proposer.observed)
        grown.append(proposer._model[0].optimizer is None)
    # Refitted on every new measurement with the stored kernel, no optimizer ...
    assert grown and all(grown)
    assert proposer._kernel is kernel and proposer._model[0].kernel_ == kernel
    # ... until the data grew by a fifth: optimized again, and stored.
    proposer._fit()
    assert proposer._model[0].optimizer is not None
    assert proposer._kernel_size == len(proposer.observed) >= 1.2 * size


def test_a_resumed_surrogate_proposes_what_the_uninterrupted_one_does() -> None:
    import pickle

    options = Surrogate(pool=150, max_points=25, refit_growth=0.3)
    first, tell_first = _driven(options, steps=32, seed=3)
    # Saved between two hyperparameter optimizations: the stored kernel matters.
    assert first._kernel_size < len(first.observed)
    state = pickle.loads(pickle.dumps(first.state_dict()))
    second, tell_second = _driven(options, steps=0, seed=3)
    second.load_state_dict(state)
    for _ in range(8):
        (a,) = first.ask(1)
        (b,) = second.ask(1)
        assert a == b
        tell_first(a)
        tell_second(b)
