"""The run directory of a search: the evaluation log, the stored settings and
the proposer checkpoint.

``evaluations.jsonl`` gets one JSON line per evaluation as soon as it
finishes. Each line is handed to the operating system (one ``write``) before
the loop goes on, so killing the process (even ``kill -9``) loses nothing that
was logged; a background thread fsyncs the file right behind the writes, so a
machine crash loses at most the last few lines (they are evaluated again on
resume), without making every evaluation wait for the disk.

Every line carries a CRC-32 of its own bytes (``"crc32"``, the last key; see
:func:`checksummed_line`), and every record is verified on load:

* a partially written last line (no newline: the process or the machine died
  while writing it) is dropped silently and the file cut back before anything
  is appended;
* any other damage (a checksum mismatch, a line that is not a record, an
  evaluation index out of order, as two runs writing one log leave) stops with
  :class:`DamagedLogError`, naming the line. Nothing is changed unless the
  caller asks for ``truncate_damaged``: then the damaged line and everything
  after it move to ``evaluations.jsonl.damaged-<time>`` and are evaluated again.
* Lines written before logs were checksummed (no ``"crc32"`` key) are accepted
  as they are, with a warning, as long as they come first: after a
  checksummed line, a line without a checksum is damage.

A failed write (full or read-only disk) raises :class:`RunStorageError`; the
records before it are safe.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EVALUATIONS = "evaluations.jsonl"
SETTINGS = "search_settings.json"
PROPOSER_STATE = "proposer_state.pkl"
TEST_ERRORS = "test_errors.json"
#: Suffix of each log line: ``, "crc32": "<8 hex digits>"}``.
_CRC_KEY = b', "crc32": "'

log = logging.getLogger(__name__)


class ResumeError(RuntimeError):
    """A run directory that cannot be used or resumed with the given settings."""


class RunStorageError(ResumeError):
    """Writing the run directory failed (full or read-only disk, permissions, I/O error)."""


class DamagedLogError(ResumeError):
    """An evaluation log with a damaged record (not a torn last line).

    Attributes:
        path: the log.
        line: 1-based number of the first damaged line.
        offset: its byte offset.
        intact: records before it.
    """

    def __init__(self, message: str, *, path: Path, line: int, offset: int, intact: int) -> None:
        super().__init__(message)
        self.path, self.line, self.offset, self.intact = path, line, offset, intact


def storage_error(what: str, path: Path, error: OSError, then: str) -> RunStorageError:
    """A :class:`RunStorageError` naming the file, the system's reason and what to do."""
    reason = error.strerror or str(error)
    return RunStorageError(f"cannot {what} {path}: {reason} (errno {error.errno}); {then}")


def checksummed_line(text: str) -> bytes:
    """One log line: the JSON object ``text`` with ``"crc32"`` (of the bytes before
    it) as its last key, and a newline. Still one JSON object per line."""
    body = text.encode()
    if not (body.startswith(b"{") and body.endswith(b"}")) or body == b"{}":
        raise ValueError(f"expected a non-empty JSON object, got {text[:40]!r}")
    prefix = body[:-1]
    return prefix + _CRC_KEY + b"%08x" % zlib.crc32(prefix) + b'"}\n'


class _DamagedLine(ValueError):
    pass


def parse_line(line: bytes) -> tuple[dict[str, Any], bool]:
    """The JSON object of one log line (without its newline) and whether it
    carried a checksum.

    Raises:
        _DamagedLine: a checksum mismatch, or not a JSON object.
    """
    at = line.rfind(_CRC_KEY)
    if at >= 0 and line.endswith(b'"}'):
        digest = line[at + len(_CRC_KEY) : -2]
        try:
            expected = int(digest, 16) if len(digest) == 8 else -1
        except ValueError:
            expected = -1
        if expected != zlib.crc32(line[:at]):
            raise _DamagedLine("its checksum does not match its content")
        checked = True
    else:
        checked = False
    try:
        payload = json.loads(line)
    except ValueError:
        raise _DamagedLine("it is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _DamagedLine("it is not a JSON object")
    if not checked and "crc32" in payload:
        raise _DamagedLine("its checksum is malformed")
    payload.pop("crc32", None)
    return payload, checked


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file, fsync and ``os.replace``."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_json_atomic(path: str | Path, payload: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class EvaluationRecord:
    """One evaluated candidate, as stored in ``evaluations.jsonl``.

    Attributes:
        index: 0-based evaluation number (baselines first).
        bits: point name -> bits, in the workload's point order.
        genes: choice index per gene.
        objectives: objective name -> value (natural orientation; speedup positive).
        losses: what the algorithm was told (maximized objectives negated).
        metrics: every cost metric of the platform.
        error: error on the optimization set.
        feasible: every constraint holds.
        violations: human-readable broken constraints.
        evaluator: which evaluator scored it (``"ptq"``, ``"beacon:b000"``, ...).
        seconds: evaluation time.
        origin: ``"baseline"`` (uniform precision), ``"seed"`` or ``"optimizer"``.
        label: e.g. ``"uniform-8"`` for baselines.
        fidelity: share of the optimization set the error was measured on.
        extras: other values the evaluator reported (beacon distance, ...).
        method: the quantization method that scored it (e.g. the PTQ preset
            ``"best"``; the search's ``ptq`` settings hold every field).
    """

    index: int
    bits: dict[str, int]
    genes: list[int]
    objectives: dict[str, float]
    losses: list[float]
    metrics: dict[str, float]
    error: float
    feasible: bool
    violations: list[str] = field(default_factory=list)
    evaluator: str = "ptq"
    seconds: float = 0.0
    origin: str = "optimizer"
    label: str = ""
    fidelity: float = 1.0
    extras: dict[str, float] = field(default_factory=dict)
    method: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class _Syncer:
    """fsyncs a file in a background thread, right behind the writes.

    A failed fsync (I/O error, full disk on a network file system) is kept and
    raised in the writing thread at its next call, never lost with the thread.
    """

    def __init__(self, fileno: int) -> None:
        self.fileno = fileno
        self.condition = threading.Condition()
        self.written_count = 0
        self.synced_count = 0
        self.stopping = False
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name="mohaq-log-fsync", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self.condition:
                while self.synced_count == self.written_count and not self.stopping:
                    self.condition.wait()
                target, stopping = self.written_count, self.stopping
            try:
                os.fsync(self.fileno)
            except OSError as error:
                with self.condition:
                    self.error = self.error or error
            with self.condition:
                self.synced_count = target
                self.condition.notify_all()
                if stopping and self.synced_count == self.written_count:
                    return

    def written(self) -> None:
        with self.condition:
            self.written_count += 1
            self.condition.notify_all()

    def wait(self) -> None:
        with self.condition:
            while self.synced_count < self.written_count:
                self.condition.wait()

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        self.thread.join()


class EvaluationLog:
    """Append-only, crash-safe, verified log of evaluations (see the module docstring).

    Use as a context manager, or call :meth:`close`, so the last lines are fsynced.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / EVALUATIONS
        self._fd: int | None = None
        self._syncer: _Syncer | None = None
        self._appended = 0

    def read(self) -> list[EvaluationRecord]:
        """Verified records on disk, changing nothing: for readers of a log that
        another process may be writing (a torn last line is ignored).

        Raises:
            DamagedLogError: a damaged line (names it, and how to go on).
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, _, damage = self._scan(data)
        if damage is not None:
            raise self._damaged(data, records, *damage)
        return records

    def load(self, *, truncate_damaged: bool = False) -> list[EvaluationRecord]:
        """Verified records on disk, for the run that appends next: cuts off a
        partially written last line.

        Args:
            truncate_damaged: at the first damaged line, move it and everything
                after it aside (``evaluations.jsonl.damaged-<time>``) and return
                the records before it, instead of raising.

        Raises:
            DamagedLogError: a damaged line (names it, and how to go on).
            RunStorageError: the file cannot be cut back (read-only disk).
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, good_end, damage = self._scan(data)
        if damage is not None:
            if not truncate_damaged:
                raise self._damaged(data, records, *damage)
            self._set_aside(data, *damage)
        elif good_end < len(data):
            self._cut(good_end)  # a torn last line: the write never finished
        return records

    def _scan(self, data: bytes) -> tuple[list[EvaluationRecord], int, tuple[int, int, str] | None]:
        """Records up to the first damaged line, the end of the last complete
        line, and the damage (line number, byte offset, reason) if any."""
        records: list[EvaluationRecord] = []
        unchecked = 0
        seen_checksum = False
        position = 0
        damage: tuple[int, int, str] | None = None
        for number, line in enumerate(data.split(b"\n")[:-1], start=1):
            start, position = position, position + len(line) + 1
            if not line.strip():
                continue
            try:
                payload, checked = parse_line(line)
                if not checked and seen_checksum:
                    raise _DamagedLine("it has no checksum, unlike the lines before it")
                record = EvaluationRecord.from_dict(payload)
            except (_DamagedLine, TypeError) as why:
                reason = (
                    str(why) if isinstance(why, _DamagedLine) else f"it is not a record ({why})"
                )
                damage = (number, start, reason)
                break
            if record.index != len(records):
                damage = (
                    number,
                    start,
                    f"it holds evaluation {record.index} where {len(records)} was expected "
                    "(did two runs write this log?)",
                )
                break
            seen_checksum |= checked
            unchecked += not checked
            records.append(record)
        if unchecked:
            log.warning(
                "%s: %d record(s) carry no checksum (written by an older mohaq); they are "
                "accepted as they are",
                self.path,
                unchecked,
            )
        return records, position, damage

    def _damaged(
        self, data: bytes, records: list[EvaluationRecord], number: int, offset: int, reason: str
    ) -> DamagedLogError:
        after = sum(1 for line in data[offset:].split(b"\n")[1:-1] if line.strip())
        return DamagedLogError(
            f"{self.path} line {number} (byte {offset}) is damaged: {reason}. The "
            f"{len(records)} records before it are intact; {after} more line(s) follow "
            "it. Nothing was changed. To go on from the intact records, resume with "
            "truncate_damaged (mohaq: --resume true --truncate_damaged true): line "
            f"{number} and everything after it are moved to {self.path.name}.damaged-<time> "
            "and evaluated again",
            path=self.path,
            line=number,
            offset=offset,
            intact=len(records),
        )

    def _set_aside(self, data: bytes, number: int, offset: int, reason: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        count = 1
        while aside.exists():  # never overwrite lines set aside before
            count += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{count}")
        try:
            atomic_write_bytes(aside, data[offset:])
        except OSError as error:
            raise storage_error(
                "set aside the damaged lines in", aside, error, "nothing was changed"
            ) from error
        self._cut(offset)
        log.warning(
            "%s line %d is damaged (%s): it and the %d bytes after it were moved to %s and will "
            "be evaluated again",
            self.path,
            number,
            reason,
            len(data) - offset,
            aside,
        )

    def _cut(self, size: int) -> None:
        try:
            with open(self.path, "r+b") as stream:
                stream.truncate(size)
                stream.flush()
                os.fsync(stream.fileno())
        except OSError as error:
            raise storage_error(
                "cut back the partly written last line of",
                self.path,
                error,
                "the run directory must be writable to resume",
            ) from error

    def append(self, record: EvaluationRecord) -> None:
        """Writes one checksummed line and hands it to the operating system
        (survives a killed process); the background thread fsyncs it.

        Raises:
            RunStorageError: the write failed (the records before it are safe).
        """
        data = checksummed_line(record.to_json())
        then = (
            f"the {record.index} records before it are safe (a partly written line is dropped "
            "on resume): make room or fix the disk, then resume (--resume true)"
        )
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._syncer = _Syncer(self._fd)
            self._write(data)
        except OSError as error:
            raise storage_error(
                f"append evaluation {record.index} to", self.path, error, then
            ) from error
        assert self._syncer is not None
        self._raise_sync_error()
        self._syncer.written()
        self._appended += 1

    def _write(self, data: bytes) -> None:
        """One ``write`` per line (a regular file may take less on a full disk: go on)."""
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _raise_sync_error(self) -> None:
        if self._syncer is not None and self._syncer.error is not None:
            raise storage_error(
                "fsync",
                self.path,
                self._syncer.error,
                "its last lines may not be on the disk: fix the disk, then resume (--resume true)",
            )

    def sync(self) -> None:
        """Waits until everything appended is on disk.

        Raises:
            RunStorageError: an fsync failed.
        """
        if self._syncer is not None:
            self._syncer.wait()
            self._raise_sync_error()

    def close(self) -> None:
        """fsyncs and closes; raises :class:`RunStorageError` if an fsync failed."""
        if self._fd is not None:
            assert self._syncer is not None
            self._syncer.stop()
            os.close(self._fd)
            self._fd = None
            syncer, self._syncer = self._syncer, None
            if syncer.error is not None:
                self._syncer = syncer
                try:
                    self._raise_sync_error()
                finally:
                    self._syncer = None

    def __enter__(self) -> EvaluationLog:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.close()
        except RunStorageError:
            if exc_type is None:
                raise  # otherwise the error already in flight says more

    def __iter__(self) -> Iterator[EvaluationRecord]:
        return iter(self.read())


@dataclass(frozen=True)
class StoredRun:
    """What ``search_settings.json`` holds.

    Attributes:
        settings: the search settings (``SearchSettings.to_dict()``).
        problem: what the settings resolved to: platform name, objectives,
            maximized objectives, constraints, space, points, reference point.
        checkpoint: the float checkpoint the search scored (None if none).
        seeds: gene vectors evaluated right after the baselines.
    """

    settings: dict[str, Any]
    problem: dict[str, Any]
    checkpoint: str | None = None
    seeds: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, run_dir: str | Path) -> StoredRun:
        """Raises ResumeError if the run directory holds no readable settings."""
        path = Path(run_dir) / SETTINGS
        if not path.is_file():
            raise ResumeError(
                f"{run_dir} holds no search settings ({SETTINGS}): is it a search run?"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except (ValueError, TypeError) as error:
            raise ResumeError(
                f"{path} is not a settings file this version can read ({error}); "
                "run the search again in a new run directory (or, if the file was damaged, "
                "delete it and resume with the run's original settings: they are stored again)"
            ) from error


def store_run(run_dir: Path, run: StoredRun, *, resume: bool, resumable: tuple[str, ...]) -> None:
    """Writes ``search_settings.json``; on resume, refuses changed settings
    (except those in ``resumable``, e.g. the budget, which may grow).

    Raises:
        ResumeError: if a fresh run would overwrite evaluations, or a resume
            changes a setting (names each one with both values).
    """
    log = run_dir / EVALUATIONS
    if not resume:
        if log.exists() and log.stat().st_size > 0:
            raise ResumeError(
                f"{run_dir} already holds evaluations; resume that run (--resume true) "
                "or choose another run directory"
            )
    elif (run_dir / SETTINGS).exists():
        stored = StoredRun.read(run_dir)
        changes = [
            (f"settings.{key}", stored.settings.get(key), run.settings.get(key))
            for key in sorted(set(stored.settings) | set(run.settings))
            if key not in resumable and stored.settings.get(key) != run.settings.get(key)
        ]
        changes += [
            (f"problem.{key}", stored.problem.get(key), run.problem.get(key))
            for key in sorted(set(stored.problem) | set(run.problem))
            if stored.problem.get(key) != run.problem.get(key)
        ]
        for name in ("checkpoint", "seeds"):
            if getattr(stored, name) != getattr(run, name):
                changes.append((name, getattr(stored, name), getattr(run, name)))
        if changes:
            details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
            raise ResumeError(f"cannot resume {run_dir} with different settings ({details})")
    try:
        write_json_atomic(run_dir / SETTINGS, run.to_dict())
    except OSError as error:
        raise storage_error(
            "write", run_dir / SETTINGS, error, "the run directory must be writable"
        ) from error


class ProposerCheckpoint:
    """The proposer's pickled state, with how many log records it had been told.

    Saved atomically, after the log is fsynced, so a checkpoint never knows
    more than the log holds.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / PROPOSER_STATE

    def save(self, algorithm: str, told: int, state: Any) -> None:
        """Raises RunStorageError when the disk refuses it (the log is intact)."""
        payload = {"algorithm": algorithm, "told": told, "state": state}
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            atomic_write_bytes(self.path, data)
        except OSError as error:
            raise storage_error(
                "save the proposer checkpoint",
                self.path,
                error,
                "the evaluations logged so far are safe: make room or fix the disk, then "
                "resume (--resume true)",
            ) from error

    def load(self, algorithm: str, logged: int) -> tuple[int, Any] | None:
        """``(told, state)``, or None when there is no usable checkpoint (none,
        another algorithm's, unreadable, or ahead of a log cut back by a crash)."""
        if not self.path.exists():
            return None
        try:
            payload = pickle.loads(self.path.read_bytes())
        except Exception:  # noqa: BLE001 - a damaged checkpoint is replayed from the log
            return None
        if payload.get("algorithm") != algorithm or int(payload.get("told", -1)) > logged:
            return None
        return int(payload["told"]), payload["state"]
