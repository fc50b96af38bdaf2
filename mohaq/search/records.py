"""The run directory of a search: the evaluation log, the stored settings and
the proposer checkpoint.

``evaluations.jsonl`` gets one JSON line per evaluation as soon as it
finishes. Each line is written and flushed to the operating system before the
loop goes on, so killing the process (even ``kill -9``) loses nothing that was
logged; a background thread fsyncs the file right behind the writes, so a
machine crash loses at most the last few lines (they are evaluated again on
resume), without making every evaluation wait for the disk. On load a partially
written last line is dropped and the file cut back to its last complete line
before anything is appended.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EVALUATIONS = "evaluations.jsonl"
SETTINGS = "search_settings.json"
PROPOSER_STATE = "proposer_state.pkl"
TEST_ERRORS = "test_errors.json"


class ResumeError(RuntimeError):
    """A run directory that cannot be used or resumed with the given settings."""


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class _Syncer:
    """fsyncs a file in a background thread, right behind the writes."""

    def __init__(self, fileno: int) -> None:
        self.fileno = fileno
        self.condition = threading.Condition()
        self.written_count = 0
        self.synced_count = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="mohaq-log-fsync", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self.condition:
                while self.synced_count == self.written_count and not self.stopping:
                    self.condition.wait()
                target, stopping = self.written_count, self.stopping
            os.fsync(self.fileno)
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
    """Append-only, crash-safe log of evaluations (see the module docstring).

    Use as a context manager, or call :meth:`close`, so the last lines are fsynced.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / EVALUATIONS
        self._stream: Any = None
        self._syncer: _Syncer | None = None

    def load(self) -> list[EvaluationRecord]:
        """Records on disk; cuts off a partially written last line."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records: list[EvaluationRecord] = []
        good_end = 0
        position = 0
        for line in data.splitlines(keepends=True):
            end = position + len(line)
            complete = line.endswith(b"\n")
            try:
                parsed = json.loads(line) if complete and line.strip() else None
            except json.JSONDecodeError:
                parsed = None
            if parsed is None:
                if complete and not line.strip():
                    good_end = end
                    position = end
                    continue
                break  # a torn or corrupt line: everything after it is dropped
            records.append(EvaluationRecord.from_dict(parsed))
            good_end = end
            position = end
        if good_end < len(data):
            with open(self.path, "r+b") as stream:
                stream.truncate(good_end)
                stream.flush()
                os.fsync(stream.fileno())
        return records

    def append(self, record: EvaluationRecord) -> None:
        """Writes one line and hands it to the operating system (survives a
        killed process); the background thread fsyncs it."""
        if self._stream is None:
            self._stream = open(self.path, "a", encoding="utf-8")
            self._syncer = _Syncer(self._stream.fileno())
        self._stream.write(record.to_json() + "\n")
        self._stream.flush()
        assert self._syncer is not None
        self._syncer.written()

    def sync(self) -> None:
        """Waits until everything appended is on disk."""
        if self._syncer is not None:
            self._syncer.wait()

    def close(self) -> None:
        if self._stream is not None:
            assert self._syncer is not None
            self._syncer.stop()
            self._stream.close()
            self._stream = None
            self._syncer = None

    def __enter__(self) -> EvaluationLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[EvaluationRecord]:
        return iter(self.load())


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
                "run the search again in a new run directory"
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
    write_json_atomic(run_dir / SETTINGS, run.to_dict())


class ProposerCheckpoint:
    """The proposer's pickled state, with how many log records it had been told.

    Saved atomically, after the log is fsynced, so a checkpoint never knows
    more than the log holds.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / PROPOSER_STATE

    def save(self, algorithm: str, told: int, state: Any) -> None:
        payload = {"algorithm": algorithm, "told": told, "state": state}
        atomic_write_bytes(self.path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

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
