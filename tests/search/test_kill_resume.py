"""kill -9 in the middle of a search, twice, then --resume: nothing lost, nothing
evaluated twice, and the same records as an uninterrupted seeded run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_proposers import SMALL_HAQ
from test_search_fakes import fake_search

from mohaq.search.evaluators import AnalyticEvaluator
from mohaq.search.records import EvaluationLog

SEARCH_TESTS = Path(__file__).resolve().parent

SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import mohaq.search.run
mohaq.search.run.CHECKPOINT_INTERVAL_S = 0.0  # a checkpoint after every evaluation
from test_proposers import SMALL_HAQ
from test_search_fakes import fake_search
from mohaq.search.evaluators import AnalyticEvaluator

class Slow(AnalyticEvaluator):
    def evaluate(self, assignment, split="optimization"):
        time.sleep(0.02)
        return super().evaluate(assignment, split)

algorithm = {{"haq": SMALL_HAQ}}.get({algorithm!r}, {algorithm!r})
fake_search({run_dir!r}, evaluator=Slow(), algorithm=algorithm, seed=7, budget=60,
            resume={resume}, constraints={{"max_memory_mb": 12}})
"""


def run_and_kill(run_dir: Path, algorithm: str, resume: bool, lines: int) -> None:
    """Runs the search in another process and kill -9s it once the log holds ``lines``."""
    script = SCRIPT.format(
        tests=str(SEARCH_TESTS), run_dir=str(run_dir), algorithm=algorithm, resume=resume
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    log = run_dir / "evaluations.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and log.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.005)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("algorithm", ["nsga2", "TwoPointsDE-LHS", "haq", "surrogate"])
def test_kill_9_twice_then_resume_equals_an_uninterrupted_run(tmp_path, algorithm) -> None:
    options = {"haq": SMALL_HAQ}.get(algorithm, algorithm)
    settings = {"algorithm": options, "seed": 7, "budget": 60, "constraints": {"max_memory_mb": 12}}
    full = fake_search(tmp_path / "full", **settings)
    run_dir = tmp_path / "killed"
    run_and_kill(run_dir, algorithm, resume=False, lines=9)
    first = len(EvaluationLog(run_dir).load())
    run_and_kill(run_dir, algorithm, resume=True, lines=first + 17)
    second = len(EvaluationLog(run_dir).load())
    assert 9 <= first < second < 60
    evaluator = AnalyticEvaluator()
    resumed = fake_search(run_dir, evaluator=evaluator, resume=True, **settings)
    assert evaluator.calls == 60 - second  # nothing logged was evaluated again
    assert [(r.index, r.genes, r.error) for r in resumed.records] == [
        (r.index, r.genes, r.error) for r in full.records
    ]
    assert [r.index for r in resumed.front] == [r.index for r in full.front]
