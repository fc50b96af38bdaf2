import csv
import json

import pytest
from test_proposers import SMALL_HAQ
from test_search_fakes import FakeCostModel, fake_search, fake_workload

from mohaq.search import AlgorithmError, ResumeError, SearchConfigError, compare_hypervolumes
from mohaq.search.evaluators import AnalyticEvaluator, BuiltEvaluator
from mohaq.search.pareto import dominates, hypervolume
from mohaq.search.proposers.surrogate import Surrogate
from mohaq.search.records import EvaluationLog
from mohaq.search.run import default_callbacks


def small_nsga2():
    from mohaq.search import NSGA2

    return NSGA2(population=10, offspring=4)


def test_baselines_first_no_duplicates_and_files(tmp_path) -> None:
    evaluator = AnalyticEvaluator()
    result = fake_search(tmp_path, evaluator=evaluator, callbacks=default_callbacks(progress=False))
    labels = [r.label for r in result.records[:4]]
    assert labels == ["uniform-16", "uniform-8", "uniform-4", "uniform-2"]
    assert [r.index for r in result.records] == list(range(30))
    assert len({tuple(r.genes) for r in result.records}) == 30 == evaluator.calls
    for name in ("pareto.csv", "pareto.png", "summary.md", "evaluations.jsonl", "test_errors.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert any((tmp_path / "tensorboard").iterdir())
    summary = (tmp_path / "summary.md").read_text()
    assert "uniform-8" in summary and "Hypervolume" in summary and "pareto.csv" in summary
    # Test errors: the analytic evaluator adds 0.01 on the test split.
    for record in result.front:
        assert result.test_errors[record.index] == pytest.approx(record.error + 0.01)


def test_infeasible_points_never_in_the_front(tmp_path) -> None:
    # 16-bit baseline breaks the memory bound (19.3 MB), 2-bit the error bound (0.5).
    result = fake_search(tmp_path, constraints={"max_memory_mb": 12, "max_error": 0.3}, budget=40)
    by_label = {r.label: r for r in result.baselines}
    assert not by_label["uniform-16"].feasible and not by_label["uniform-2"].feasible
    assert by_label["uniform-8"].feasible
    with open(tmp_path / "pareto.csv") as stream:
        rows = list(csv.DictReader(stream))
    indices = {int(row["index"]) for row in rows}
    records = {r.index: r for r in result.records}
    assert indices and all(records[i].feasible for i in indices)
    assert all(records[i].metrics["memory_mb"] <= 12 and records[i].error <= 0.3 for i in indices)
    front = [records[i].losses for i in indices]
    assert not any(dominates(a, b) for a in front for b in front)
    # Nothing infeasible on a cost metric was evaluated except the baselines.
    assert all(r.metrics["memory_mb"] <= 12 for r in result.records if r.origin == "optimizer")


def test_small_space_is_exhausted_without_repeats(tmp_path) -> None:
    # Shared precision, one layer, bits 4/8/16: only 3 assignments exist.
    evaluator = AnalyticEvaluator()
    platform = FakeCostModel(allowed_bits=(4, 8, 16), shared_layer_precision=True)
    result = fake_search(
        tmp_path, workload=fake_workload(1), cost_model=platform, evaluator=evaluator, budget=10
    )
    assert evaluator.calls == 3 == len(result.records)
    assert "whole search space" in result.stopped_early


@pytest.mark.parametrize("algorithm", ["TwoPointsDE-LHS", "nsga2", "random", "surrogate", "haq"])
@pytest.mark.parametrize("checkpoint_every_evaluation", [False, True])
def test_resume_after_crash_equals_uninterrupted_run(
    tmp_path, monkeypatch, algorithm, checkpoint_every_evaluation
) -> None:
    if checkpoint_every_evaluation:  # resume from the proposer checkpoint, not from the seed
        monkeypatch.setattr("mohaq.search.run.CHECKPOINT_INTERVAL_S", 0.0)
    options = {
        "nsga2": small_nsga2(),
        "surrogate": Surrogate(pool=100, probe_choices=1),
        "haq": SMALL_HAQ,
    }.get(algorithm, algorithm)
    full = fake_search(tmp_path / "a", algorithm=options, seed=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fake_search(
            tmp_path / "b", algorithm=options, seed=7, evaluator=AnalyticEvaluator(fail_after=13)
        )
    log = tmp_path / "b" / "evaluations.jsonl"
    assert len(EvaluationLog(tmp_path / "b").load()) == 13
    assert (tmp_path / "b" / "proposer_state.pkl").exists() == checkpoint_every_evaluation
    with open(log, "a") as stream:
        stream.write('{"index": 13, "bits": {"l0')  # a torn last line, as after kill -9
    resumed_evaluator = AnalyticEvaluator()
    resumed = fake_search(
        tmp_path / "b", algorithm=options, seed=7, resume=True, evaluator=resumed_evaluator
    )
    assert resumed_evaluator.calls == 30 - 13
    assert [r.index for r in resumed.records] == list(range(30))
    assert [(r.genes, r.error) for r in resumed.records] == [
        (r.genes, r.error) for r in full.records
    ]
    assert len(log.read_text().splitlines()) == 30


def test_resume_refuses_changed_settings_and_fresh_run_refuses_used_dir(tmp_path) -> None:
    fake_search(tmp_path, budget=6)
    with pytest.raises(ResumeError, match="seed"):
        fake_search(tmp_path, budget=8, seed=1, resume=True)
    with pytest.raises(ResumeError, match="--resume true"):
        fake_search(tmp_path, budget=8)


def test_nsga2_improves_hypervolume_over_initial_population(tmp_path) -> None:
    from mohaq.search import NSGA2

    result = fake_search(tmp_path, algorithm=NSGA2(population=20, offspring=10), budget=100)
    initial = [r.losses for r in result.records[:20]]
    assert result.hypervolume > hypervolume(initial, result.reference) * 1.01


def test_random_search_comparison_at_equal_budget(tmp_path) -> None:
    fake_search(tmp_path / "de", budget=40, algorithm="TwoPointsDE-LHS")
    fake_search(tmp_path / "random", budget=40, algorithm="random")
    comparison = compare_hypervolumes(tmp_path / "de", tmp_path / "random")
    assert comparison["a"]["algorithm"] == "nevergrad"
    assert comparison["a"]["algorithm_options"] == {"optimizer": "TwoPointsDE-LHS"}
    assert comparison["b"]["algorithm"] == "random"
    assert comparison["a"]["evaluations"] == comparison["b"]["evaluations"] == 40
    assert comparison["a"]["hypervolume"] > 0 and comparison["b"]["hypervolume"] > 0


def test_bad_settings_fail_before_any_evaluation(tmp_path) -> None:
    with pytest.raises(AlgorithmError, match="unknown algorithm 'Nope'.*nsga2.*random"):
        fake_search(tmp_path, algorithm="Nope")
    with pytest.raises(SearchConfigError, match="budget 3 is below the 4 uniform baselines"):
        fake_search(tmp_path, budget=3)
    with pytest.raises(SearchConfigError, match="workers must be"):
        fake_search(tmp_path, workers=0)
    with pytest.raises(SearchConfigError, match="cannot be shared with worker processes"):
        fake_search(tmp_path, workers=2)
    assert not (tmp_path / "evaluations.jsonl").exists()


def test_two_worker_processes(tmp_path) -> None:
    factory = BuiltEvaluator(AnalyticEvaluator())
    result = fake_search(tmp_path, evaluator_factory=factory, workers=2, budget=16)
    assert [r.index for r in result.records] == list(range(16))
    assert len({tuple(r.genes) for r in result.records}) == 16
    assert all(r.evaluator == "analytic" for r in result.records)
    assert set(result.test_errors) == {r.index for r in result.front}
    assert (tmp_path / "proposer_state.pkl").read_bytes()
    # Resume in parallel mode to a larger budget: continues from the checkpoint.
    more = fake_search(tmp_path, evaluator_factory=factory, workers=2, budget=20, resume=True)
    assert [r.index for r in more.records] == list(range(20))
    assert len({tuple(r.genes) for r in more.records}) == 20
    stored = json.loads((tmp_path / "search_settings.json").read_text())
    assert stored["settings"]["budget"] == 20


class Racer(AnalyticEvaluator):
    """Stops at half the set whenever its error is above the hint."""

    name = "racer"

    def __init__(self) -> None:
        super().__init__()
        self.hints: list[tuple[dict, float | None]] = []

    def evaluate(self, assignment, split="optimization", *, stop_above=None):
        result = super().evaluate(assignment, split)
        self.hints.append((assignment.to_dict(), stop_above))
        if stop_above is not None and result.error > stop_above:
            return type(result)(result.error, fidelity=0.5, evaluator=self.name)
        return result


def test_racing_hints_and_partial_records_stay_off_the_front(tmp_path) -> None:
    evaluator = Racer()
    result = fake_search(
        tmp_path, evaluator=evaluator, racing=True, budget=40, algorithm="random",
        constraints={"max_error": 0.45}, rescore_test=False,
    )  # fmt: skip
    assert all(hint is None for _, hint in evaluator.hints[:4])  # baselines: always full
    partial = [r for r in result.records if r.fidelity < 1]
    assert partial and all(r.fidelity == 0.5 for r in partial)
    assert all(r.fidelity == 1.0 for r in result.front)
    # Each hint is the best error the front reached at equal or lower cost (or the bound).
    records = result.records
    for index, (bits, hint) in enumerate(evaluator.hints[4:], start=4):
        before = [r for r in records[:index] if r.feasible and r.fidelity == 1.0]
        costs = records[index].losses[1:]
        cheaper = [
            r.error for r in before if all(a <= b for a, b in zip(r.losses[1:], costs, strict=True))
        ]
        assert records[index].bits == bits
        assert hint == pytest.approx(min(cheaper + [0.45]))
    summary = (tmp_path / "summary.md").read_text()
    assert f"racing: {len(partial)} candidates stopped early" in summary
