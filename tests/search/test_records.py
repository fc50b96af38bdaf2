"""The evaluation log and the proposer checkpoint."""

from __future__ import annotations

import pytest

from mohaq.search.records import (
    EvaluationLog,
    EvaluationRecord,
    ProposerCheckpoint,
    ResumeError,
    StoredRun,
    store_run,
)


def record(index: int) -> EvaluationRecord:
    return EvaluationRecord(
        index=index, bits={"a": 8}, genes=[2], objectives={"error": 0.1}, losses=[0.1],
        metrics={}, error=0.1, feasible=True, extras={"beacon_distance": 2.0},
    )  # fmt: skip


def test_log_appends_syncs_and_drops_a_torn_last_line(tmp_path) -> None:
    with EvaluationLog(tmp_path) as log:
        for i in range(3):
            log.append(record(i))
        log.sync()
        assert len(log.path.read_text().splitlines()) == 3
    with open(log.path, "a") as stream:
        stream.write('{"index": 3, "bi')
    loaded = EvaluationLog(tmp_path).load()
    assert [r.index for r in loaded] == [0, 1, 2] and loaded[0].extras == {"beacon_distance": 2.0}
    assert log.path.read_text().endswith("}\n")  # cut back to the last complete line


def test_checkpoint_never_ahead_of_the_log_and_per_algorithm(tmp_path) -> None:
    checkpoint = ProposerCheckpoint(tmp_path)
    assert checkpoint.load("nsga2", 5) is None
    checkpoint.save("nsga2", 4, {"x": 1})
    assert checkpoint.load("nsga2", 5) == (4, {"x": 1})
    assert checkpoint.load("nsga2", 3) is None  # the log lost lines: replay from the seed
    assert checkpoint.load("random", 5) is None
    checkpoint.path.write_bytes(b"garbage")
    assert checkpoint.load("nsga2", 5) is None


def test_stored_run_refuses_changes_on_resume(tmp_path) -> None:
    run = StoredRun(settings={"seed": 0, "budget": 10}, problem={"platform": "x"}, checkpoint="a")
    store_run(tmp_path, run, resume=False, resumable=("budget",))
    grown = StoredRun(settings={"seed": 0, "budget": 20}, problem={"platform": "x"}, checkpoint="a")
    store_run(tmp_path, grown, resume=True, resumable=("budget",))
    other = StoredRun(settings={"seed": 0, "budget": 20}, problem={"platform": "x"}, checkpoint="b")
    with pytest.raises(ResumeError, match="checkpoint: 'a' -> 'b'"):
        store_run(tmp_path, other, resume=True, resumable=("budget",))
    with pytest.raises(ResumeError, match="holds no search settings"):
        StoredRun.read(tmp_path / "nothing")
