"""Fault injection on the search: kill -9 at random points, two processes on
one run directory, damaged log lines, full and read-only disks. Every case
ends in the uninterrupted run's result or in a typed error.

(Divergence: tests/callbacks/test_divergence.py and tests/test_cli.py; damaged
cache and corpus bytes: tests/datamodules; beacon stages:
test_beacon_faults.py; exit codes: tests/test_cli.py.)
"""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest
from fault_tools import fork, kill_self, run_killed_at, wait, wait_for
from test_search_fakes import fake_search

import mohaq.search.records as records_module
import mohaq.search.run as run_module
from mohaq.search.evaluators import AnalyticEvaluator
from mohaq.search.lock import RunDirectoryInUseError, RunLockError
from mohaq.search.records import DamagedLogError, EvaluationLog, RunStorageError

SETTINGS = {"seed": 5, "budget": 40, "constraints": {"max_memory_mb": 12}}


def outcome(result) -> tuple[list, list]:
    return (
        [(r.index, r.genes, r.error, r.origin) for r in result.records],
        [r.index for r in result.front],
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, list]]:
    """Uninterrupted runs to compare with, one per algorithm."""
    root = tmp_path_factory.mktemp("reference")
    return {
        algorithm: outcome(fake_search(root / algorithm, algorithm=algorithm, **SETTINGS))
        for algorithm in ("nsga2", "random")
    }


# -- kill -9 at random points --------------------------------------------------------------
def search_killed(run_dir: Path, algorithm: str, resume: bool, kind: str, at: int) -> None:
    """Runs the search in this (forked) process and SIGKILLs it at the ``at``-th
    occurrence of ``kind``."""
    run_module.CHECKPOINT_INTERVAL_S = 0.0  # a checkpoint after every evaluation: more points
    count = 0

    def due() -> bool:
        nonlocal count
        count += 1
        return count >= at

    if kind == "after a logged line":
        append = EvaluationLog.append

        def append_then_die(log, record):
            append(log, record)
            if due():
                kill_self()

        EvaluationLog.append = append_then_die
    elif kind == "in the middle of a line":
        write = EvaluationLog._write

        def torn(log, data):
            if due():
                os.write(log._fd, data[: len(data) // 2])
                kill_self()
            write(log, data)

        EvaluationLog._write = torn
    elif kind == "between a checkpoint's write and rename":
        real = records_module.atomic_write_bytes

        def half_saved(path, data):
            if due():
                (path.parent / f".{path.name}.partial").write_bytes(data[: len(data) // 2])
                kill_self()
            real(path, data)

        records_module.atomic_write_bytes = half_saved
    fake_search(run_dir, algorithm=algorithm, resume=resume, **SETTINGS)


KINDS = (
    "after a logged line",
    "in the middle of a line",
    "between a checkpoint's write and rename",
)


@pytest.mark.parametrize("algorithm", ["nsga2", "random"])
def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, algorithm: str, reference: dict
) -> None:
    rng = random.Random(f"issue-16/{algorithm}")
    run_dir = tmp_path / "run"
    logged = 0
    for kill in range(3):
        kind = rng.choice(KINDS)
        at = rng.randint(2, 9)
        run_killed_at(
            search_killed, run_dir, algorithm, kill > 0, kind, at, errors=tmp_path / "child.txt"
        )
        now = len(EvaluationLog(run_dir).load())
        assert now >= logged, (kind, at)  # nothing logged was ever lost
        logged = now
    evaluator = AnalyticEvaluator()
    resumed = fake_search(
        run_dir, evaluator=evaluator, algorithm=algorithm, resume=True, **SETTINGS
    )
    assert evaluator.calls == SETTINGS["budget"] - logged  # nothing evaluated twice
    assert outcome(resumed) == reference[algorithm]


# -- two processes, one run directory ----------------------------------------------------------
class Slow(AnalyticEvaluator):
    def evaluate(self, assignment, split="optimization"):
        time.sleep(0.01)
        return super().evaluate(assignment, split)


def test_a_second_process_is_refused_and_the_first_ends_as_if_alone(
    tmp_path: Path, reference: dict
) -> None:
    run_dir = tmp_path / "run"
    errors = tmp_path / "child.txt"
    first = fork(lambda: fake_search(run_dir, evaluator=Slow(), algorithm="nsga2", **SETTINGS), errors=errors)  # fmt: skip
    try:
        log = run_dir / "evaluations.jsonl"
        wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= 3, timeout_s=60)
        for resume in (False, True):
            with pytest.raises(RunDirectoryInUseError) as caught:
                fake_search(run_dir, algorithm="nsga2", resume=resume, **SETTINGS)
            assert f"in use by mohaq search (pid {first} on host {socket.gethostname()}" in str(
                caught.value
            )
    finally:
        # A whole search in the child: on a loaded 2-core machine it took over 60 s.
        code = wait(first, timeout_s=240)
    assert code == 0, errors.read_text() if errors.exists() else ""
    assert outcome(fake_search(run_dir, algorithm="nsga2", resume=True, **SETTINGS)) == reference["nsga2"]  # fmt: skip


# -- damaged log lines ---------------------------------------------------------------------
def test_a_damaged_line_stops_the_resume_and_truncate_damaged_recovers_the_result(
    tmp_path: Path, reference: dict
) -> None:
    run_dir = tmp_path / "run"
    fake_search(run_dir, algorithm="random", **{**SETTINGS, "budget": 25})
    log = run_dir / "evaluations.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[11] = lines[11][:40] + b"\x00" * 16 + lines[11][56:]  # a zeroed block inside it
    damaged = b"".join(lines)
    log.write_bytes(damaged)
    with pytest.raises(DamagedLogError, match=r"evaluations.jsonl line 12 \(byte \d+\) is damaged"):
        fake_search(run_dir, algorithm="random", resume=True, **SETTINGS)
    assert log.read_bytes() == damaged  # untouched until asked
    evaluator = AnalyticEvaluator()
    resumed = fake_search(
        run_dir, evaluator=evaluator, algorithm="random", resume=True, truncate_damaged=True,
        **SETTINGS,
    )  # fmt: skip
    assert evaluator.calls == SETTINGS["budget"] - 11
    assert outcome(resumed) == reference["random"]
    assert len(list(run_dir.glob("evaluations.jsonl.damaged-*"))) == 1


# -- full and read-only disks ----------------------------------------------------------------
def test_a_full_disk_stops_with_a_clear_error_and_the_resume_ends_as_if_nothing_happened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: dict
) -> None:
    run_dir = tmp_path / "run"
    real_write = os.write
    written = 0

    def fills_up(fd, data):
        nonlocal written
        written += 1
        if written > 17:  # the disk is full from the 18th line on: part of it gets written
            real_write(fd, bytes(data[:7]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(records_module.os, "write", fills_up)
    with pytest.raises(RunStorageError, match=r"cannot append evaluation 17 to .*No space left on device.*--resume true"):  # fmt: skip
        fake_search(run_dir, algorithm="nsga2", **SETTINGS)
    monkeypatch.undo()  # space was freed
    assert len(EvaluationLog(run_dir).load()) == 17
    assert outcome(fake_search(run_dir, algorithm="nsga2", resume=True, **SETTINGS)) == reference["nsga2"]  # fmt: skip


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see the simulated case")  # fmt: skip
def test_a_read_only_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o500)
    try:
        with pytest.raises(RunLockError, match="cannot lock the run directory .*Permission denied"):
            fake_search(run_dir, algorithm="nsga2", **SETTINGS)
    finally:
        run_dir.chmod(0o700)


def test_a_read_only_file_system_is_a_clear_error_simulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(RunLockError, match="cannot lock the run directory .*Read-only file system"):
        fake_search(tmp_path / "run", algorithm="nsga2", **SETTINGS)
    assert not (tmp_path / "run" / "evaluations.jsonl").exists()


def test_a_signal_during_the_search_leaves_a_resumable_run(tmp_path: Path, reference: dict) -> None:
    """SIGTERM (a scheduler's), not SIGKILL: the same guarantee."""
    run_dir = tmp_path / "run"
    child = fork(lambda: fake_search(run_dir, evaluator=Slow(), algorithm="random", **SETTINGS))
    log = run_dir / "evaluations.jsonl"
    wait_for(lambda: log.exists() and log.read_bytes().count(b"\n") >= 6, timeout_s=60)
    os.kill(child, signal.SIGTERM)
    assert wait(child) == -signal.SIGTERM
    assert outcome(fake_search(run_dir, algorithm="random", resume=True, **SETTINGS)) == reference["random"]  # fmt: skip
