"""Executors: the same search on submitit jobs (submitit's local executor, for real)."""

from __future__ import annotations

import pytest
from test_search_fakes import fake_search

from mohaq.search import BuiltEvaluator, ExecutorError, Submitit
from mohaq.search.evaluators import AnalyticEvaluator
from mohaq.search.executors import InProcess, open_executor

pytest.importorskip("submitit")


def test_search_on_submitit_local_jobs(tmp_path) -> None:
    executor = Submitit(cluster="local", parameters={"timeout_min": 5})
    result = fake_search(
        tmp_path / "run",
        evaluator_factory=BuiltEvaluator(AnalyticEvaluator()),
        executor=executor,
        workers=2,
        budget=6,
    )
    assert [r.index for r in result.records] == list(range(6))
    assert all(r.evaluator == "analytic" and r.seconds >= 0 for r in result.records)
    bits = result.records[0].bits
    assert result.records[0].error == pytest.approx(sum(1 / b for b in bits.values()) / len(bits))
    # Each job left its files in the run directory's submitit folder.
    assert len(list((tmp_path / "run" / "submitit").glob("*_result.pkl"))) >= 6


def test_other_processes_need_a_factory(tmp_path) -> None:
    with pytest.raises(ExecutorError, match="needs a picklable evaluator factory"):
        open_executor(Submitit(), workers=2, run_dir=tmp_path, evaluator=AnalyticEvaluator())
    with pytest.raises(ExecutorError, match="give an evaluator or an evaluator factory"):
        open_executor(InProcess(), workers=1, run_dir=tmp_path)
