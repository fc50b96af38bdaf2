"""The run directory: the evaluation log, the settings, the optimizer state.

``evaluations.jsonl`` gets one JSON line per evaluation as soon as it
finishes (flushed and fsynced), so a crash or ``kill -9`` loses at most the
evaluations in flight. On load a partially written last line is dropped and
the file is cut back to its last complete line before anything is appended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mohaq.search.optimizers import atomic_write_bytes

EVALUATIONS = "evaluations.jsonl"
SETTINGS = "search_settings.json"
OPTIMIZER_STATE = "optimizer.pkl"
NSGA2_STATE = "nsga2_state.json"


class ResumeError(RuntimeError):
    """A run directory that cannot be resumed with the given settings."""


@dataclass
class EvaluationRecord:
    """One evaluated candidate, as stored in ``evaluations.jsonl``.

    Attributes:
        index: 0-based evaluation number (baselines first).
        bits: point name -> bits.
        genes: choice index per gene.
        objectives: objective name -> value (natural orientation; speedup positive).
        losses: what the optimizer was told (maximized objectives negated).
        metrics: every cost metric of the platform.
        error: error on the optimization set.
        feasible: every constraint holds.
        violations: human-readable broken constraints.
        evaluator: which evaluator scored it (``"ptq"``).
        seconds: evaluation time.
        origin: ``"baseline"`` (uniform precision) or ``"optimizer"``.
        label: e.g. ``"uniform-8"`` for baselines.
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class EvaluationLog:
    """Append-only, crash-safe log of evaluations."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / EVALUATIONS

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
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(record.to_json() + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def __iter__(self) -> Iterator[EvaluationRecord]:
        return iter(self.load())


def write_json_atomic(path: str | Path, payload: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def check_or_write_settings(run_dir: Path, settings: Mapping[str, Any], *, resume: bool) -> None:
    """Stores the run's settings; on resume, refuses settings that differ
    (except the budget, which may grow).

    Raises:
        ResumeError: if a fresh run would overwrite evaluations, or a resume
            changes a setting.
    """
    path = run_dir / SETTINGS
    log = run_dir / EVALUATIONS
    if not resume:
        if log.exists() and log.stat().st_size > 0:
            raise ResumeError(
                f"{run_dir} already holds evaluations; pass resume=True to continue that run "
                "or choose another run directory"
            )
    elif path.exists():
        stored = json.loads(path.read_text())
        changed = sorted(
            key
            for key in set(stored) | set(settings)
            if key not in ("budget", "workers") and stored.get(key) != settings.get(key)
        )
        if changed:
            details = "; ".join(f"{k}: {stored.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ResumeError(f"cannot resume {run_dir} with different settings ({details})")
    write_json_atomic(path, dict(settings))
