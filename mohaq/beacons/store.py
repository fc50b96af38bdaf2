"""Retrained beacons on disk: one folder per beacon under ``<run_dir>/beacons``.

::

    beacons/
      b000/
        beacon.json    id, bits, genes, status, attempts, errors, metrics, origin
        weights.ckpt   the retrained Lightning checkpoint (written atomically)
        tensorboard/   the retraining run's TensorBoard curves (one version per attempt)

``beacon.json`` is written only by the search process, always atomically
(temporary file + rename), so a crash leaves either the old or the new
state. Status moves ``pending -> running -> done | failed | interrupted``.

A retraining that failed by itself (it raised, diverged, crashed, timed out)
is ``failed`` and its attempt counts: it is retried while ``attempts <
max_attempts``. One that was stopped from outside (the beacon stage was killed
or stopped while it ran, or the retraining process got SIGKILL/SIGTERM/SIGINT)
is ``interrupted``: the attempt does not count, the stop is recorded in
``interruptions``, and the next run of the stage (``--resume``) retrains it.
A ``running`` beacon found when the stage starts belongs to a stage that was
killed: see :meth:`~mohaq.beacons.retraining.RetrainingRunner.run`. A finished
beacon is reused after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mohaq.search.records import write_json_atomic

BEACONS_DIR = "beacons"
BEACON_JSON = "beacon.json"
WEIGHTS = "weights.ckpt"
TENSORBOARD = "tensorboard"

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
INTERRUPTED = "interrupted"
STATUSES = (PENDING, RUNNING, DONE, FAILED, INTERRUPTED)


class BeaconStoreError(RuntimeError):
    """A beacon folder that cannot be read, or an unknown beacon."""


@dataclass
class Beacon:
    """One beacon's state, as stored in ``beacon.json``.

    Attributes:
        id: folder name, ``b000``, ``b001``, ...
        bits: point name -> bits it is retrained with.
        genes: its gene vector in the search space.
        origin: ``"selected"`` (chosen from the inference-only front) or
            ``"new"`` (created during the beacon-aware search).
        source_index: the evaluation it came from (-1 if none).
        source_error: that evaluation's inference-only error.
        status: ``pending``, ``running``, ``done``, ``failed`` or ``interrupted``.
        attempts: retraining attempts that count (the running one included;
            interrupted ones do not count).
        errors: one message per failed attempt.
        interruptions: one message per retraining stopped from outside.
        metrics: what the finished retraining reported (validation PER, seconds, ...).
        updated: time of the last change (seconds since the epoch).
    """

    id: str
    bits: dict[str, int]
    genes: list[int] = field(default_factory=list)
    origin: str = "selected"
    source_index: int = -1
    source_error: float | None = None
    status: str = PENDING
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    interruptions: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    updated: float = 0.0

    @property
    def last_problem(self) -> str:
        """Why it is not done: the last error or interruption ("" when none)."""
        if self.status == INTERRUPTED and self.interruptions:
            return self.interruptions[-1]
        return self.errors[-1] if self.errors else ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Beacon:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class BeaconStore:
    """The beacons of one run directory.

    Args:
        run_dir: the search's run directory; beacons live in ``run_dir/beacons``.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir) / BEACONS_DIR

    # -- paths --------------------------------------------------------------------------
    def directory(self, beacon_id: str) -> Path:
        return self.root / beacon_id

    def weights_path(self, beacon_id: str) -> Path:
        return self.directory(beacon_id) / WEIGHTS

    # -- reading ------------------------------------------------------------------------
    def beacons(self) -> list[Beacon]:
        """Every beacon, in id order."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob(f"*/{BEACON_JSON}")):
            found.append(self._read(path))
        return found

    def _read(self, path: Path) -> Beacon:
        import json

        try:
            return Beacon.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as error:
            raise BeaconStoreError(f"cannot read beacon state {path}: {error}") from error

    def get(self, beacon_id: str) -> Beacon:
        path = self.directory(beacon_id) / BEACON_JSON
        if not path.exists():
            known = [b.id for b in self.beacons()]
            raise BeaconStoreError(f"no beacon {beacon_id!r} in {self.root}; known: {known}")
        return self._read(path)

    def find(self, bits: Mapping[str, int]) -> Beacon | None:
        """The beacon retrained with exactly ``bits``, if any."""
        wanted = dict(bits)
        return next((b for b in self.beacons() if b.bits == wanted), None)

    def usable(self) -> list[Beacon]:
        """Finished beacons whose weights exist."""
        return [b for b in self.beacons() if b.status == DONE and self.weights_path(b.id).exists()]

    # -- writing ------------------------------------------------------------------------
    def save(self, beacon: Beacon) -> Beacon:
        if beacon.status not in STATUSES:
            raise BeaconStoreError(f"status must be one of {STATUSES}, got {beacon.status!r}")
        beacon.updated = time.time()
        path = self.directory(beacon.id) / BEACON_JSON
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, asdict(beacon))
        except OSError as error:
            raise BeaconStoreError(
                f"cannot write beacon state {path}: {error.strerror or error} (errno "
                f"{error.errno}); make room or fix the disk, then resume the beacon stage "
                "(--resume true): finished beacons are kept"
            ) from error
        return beacon

    def add(
        self,
        bits: Mapping[str, int],
        *,
        genes: Sequence[int] = (),
        origin: str = "selected",
        source_index: int = -1,
        source_error: float | None = None,
    ) -> Beacon:
        """A new pending beacon, or the existing one with the same bits."""
        existing = self.find(bits)
        if existing is not None:
            return existing
        ids = [b.id for b in self.beacons()]
        number = 1 + max((int(i[1:]) for i in ids if i[1:].isdigit()), default=-1)
        beacon = Beacon(
            id=f"b{number:03d}",
            bits={str(k): int(v) for k, v in bits.items()},
            genes=[int(g) for g in genes],
            origin=origin,
            source_index=int(source_index),
            source_error=None if source_error is None else float(source_error),
        )
        return self.save(beacon)

    def mark_running(self, beacon_id: str) -> Beacon:
        beacon = self.get(beacon_id)
        beacon.status = RUNNING
        beacon.attempts += 1
        return self.save(beacon)

    def mark_done(self, beacon_id: str, metrics: Mapping[str, float]) -> Beacon:
        if not self.weights_path(beacon_id).exists():
            return self.mark_failed(
                beacon_id, f"retraining reported success but wrote no {WEIGHTS}"
            )
        beacon = self.get(beacon_id)
        beacon.status = DONE
        beacon.metrics = {str(k): float(v) for k, v in metrics.items()}
        return self.save(beacon)

    def mark_failed(self, beacon_id: str, message: str) -> Beacon:
        beacon = self.get(beacon_id)
        beacon.status = FAILED
        beacon.errors.append(str(message))
        return self.save(beacon)

    def mark_interrupted(self, beacon_id: str, message: str) -> Beacon:
        """A retraining stopped from outside: recorded, and its attempt does not count."""
        beacon = self.get(beacon_id)
        if beacon.status == RUNNING:
            beacon.attempts = max(0, beacon.attempts - 1)
        beacon.status = INTERRUPTED
        beacon.interruptions.append(str(message))
        return self.save(beacon)

    def recover_interrupted(
        self, message: str = "the beacon stage was killed during the retraining"
    ) -> list[str]:
        """Records beacons left ``running`` by a dead stage as interrupted; returns their ids."""
        recovered = []
        for beacon in self.beacons():
            if beacon.status == RUNNING:
                self.mark_interrupted(beacon.id, message)
                recovered.append(beacon.id)
        return recovered

    def needs_training(self, max_attempts: int) -> list[Beacon]:
        """Pending and interrupted beacons, and failed ones with attempts left."""
        return [
            b
            for b in self.beacons()
            if b.status in (PENDING, INTERRUPTED)
            or (b.status == FAILED and b.attempts < max_attempts)
        ]
