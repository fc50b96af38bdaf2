"""The evaluation log and the proposer checkpoint."""

from __future__ import annotations

import errno
import json
import logging
import os
import zlib

import pytest

from mohaq.search import records as records_module
from mohaq.search.records import (
    DamagedLogError,
    EvaluationLog,
    EvaluationRecord,
    ProposerCheckpoint,
    ResumeError,
    RunStorageError,
    StoredRun,
    checksummed_line,
    parse_line,
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


# -- verified lines --------------------------------------------------------------------------
def write_log(directory, count: int) -> bytes:
    with EvaluationLog(directory) as log:
        for i in range(count):
            log.append(record(i))
    return log.path.read_bytes()


def test_every_line_carries_a_checksum_of_its_bytes(tmp_path) -> None:
    line = write_log(tmp_path, 1).rstrip(b"\n")
    payload = json.loads(line)
    prefix = line[: line.rindex(b', "crc32"')]
    assert payload["crc32"] == f"{zlib.crc32(prefix):08x}"
    assert parse_line(line) == (json.loads(record(0).to_json()), True)
    assert checksummed_line('{"a": 1}') == b'{"a": 1, "crc32": "%08x"}\n' % zlib.crc32(b'{"a": 1')


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda line: line.replace(b'"error": 0.1', b'"error": 0.7'), "checksum does not match"),
        (lambda line: b"\0" * len(line), "not valid JSON"),
        (lambda line: line[:10] + line[20:], "checksum does not match"),
    ],
)
def test_a_damaged_middle_line_stops_with_its_number_and_changes_nothing(
    tmp_path, damage, reason
) -> None:
    lines = write_log(tmp_path, 5).splitlines(keepends=True)
    lines[2] = damage(lines[2][:-1]) + b"\n"
    damaged = b"".join(lines)
    (tmp_path / "evaluations.jsonl").write_bytes(damaged)
    with pytest.raises(
        DamagedLogError, match=rf"line 3 \(byte \d+\) is damaged: .*{reason}"
    ) as caught:
        EvaluationLog(tmp_path).load()
    assert caught.value.line == 3 and caught.value.intact == 2
    assert "--resume true --truncate_damaged true" in str(caught.value)
    assert "2 more line(s) follow it" in str(caught.value)
    assert (tmp_path / "evaluations.jsonl").read_bytes() == damaged  # nothing changed


def test_truncate_damaged_moves_the_rest_aside(tmp_path) -> None:
    lines = write_log(tmp_path, 5).splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"index": 3', b'"index": 8')
    (tmp_path / "evaluations.jsonl").write_bytes(b"".join(lines))
    loaded = EvaluationLog(tmp_path).load(truncate_damaged=True)
    assert [r.index for r in loaded] == [0, 1, 2]
    assert (tmp_path / "evaluations.jsonl").read_bytes() == b"".join(lines[:3])
    (aside,) = tmp_path.glob("evaluations.jsonl.damaged-*")
    assert aside.read_bytes() == b"".join(lines[3:])


def test_indices_out_of_order_are_damage(tmp_path) -> None:
    """What two runs writing one log left behind: 0, 0, 1, 1, ..."""
    with EvaluationLog(tmp_path) as log:
        for i in (0, 0, 1, 1):
            log.append(record(i))
    with pytest.raises(DamagedLogError, match="line 2 .*holds evaluation 0 where 1 was expected"):
        EvaluationLog(tmp_path).load()


def test_old_lines_without_checksums_are_accepted_first_only(tmp_path, caplog) -> None:
    old = [record(i).to_json().encode() + b"\n" for i in range(2)]
    (tmp_path / "evaluations.jsonl").write_bytes(b"".join(old))
    with EvaluationLog(tmp_path) as log:  # a resumed old run appends checksummed lines
        log.append(record(2))
    with caplog.at_level(logging.WARNING):
        assert [r.index for r in EvaluationLog(tmp_path).load()] == [0, 1, 2]
    assert "2 record(s) carry no checksum" in caplog.text
    with open(tmp_path / "evaluations.jsonl", "ab") as stream:
        stream.write(record(3).to_json().encode() + b"\n")
    with pytest.raises(DamagedLogError, match="line 4 .*no checksum, unlike the lines before it"):
        EvaluationLog(tmp_path).load()


def test_a_full_disk_is_a_clear_error_and_a_partly_written_line_is_dropped_on_resume(
    tmp_path, monkeypatch
) -> None:
    log = EvaluationLog(tmp_path)
    log.append(record(0))
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(records_module.os, "write", half_then_full)
    with pytest.raises(RunStorageError, match=r"cannot append evaluation 1 to .*No space left"):
        log.append(record(1))
    monkeypatch.undo()
    log.close()
    assert [r.index for r in EvaluationLog(tmp_path).load()] == [0]  # the torn half is dropped
    assert (tmp_path / "evaluations.jsonl").read_bytes().count(b"\n") == 1


def test_a_failed_fsync_is_raised_in_the_writing_thread(tmp_path, monkeypatch) -> None:
    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    log = EvaluationLog(tmp_path)
    monkeypatch.setattr(records_module.os, "fsync", failing_fsync)
    log.append(record(0))
    with pytest.raises(RunStorageError, match="cannot fsync .*Input/output error"):
        log.sync()
    with pytest.raises(RunStorageError, match="cannot fsync"):
        log.close()


def test_read_changes_nothing_for_readers_of_a_running_search(tmp_path) -> None:
    write_log(tmp_path, 3)
    with open(tmp_path / "evaluations.jsonl", "ab") as stream:
        stream.write(b'{"index": 3, "bi')  # being written by the search
    before = (tmp_path / "evaluations.jsonl").read_bytes()
    assert [r.index for r in EvaluationLog(tmp_path).read()] == [0, 1, 2]
    assert [r.index for r in EvaluationLog(tmp_path)] == [0, 1, 2]
    assert (tmp_path / "evaluations.jsonl").read_bytes() == before
