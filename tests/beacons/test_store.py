"""The on-disk beacon store: ids, statuses, attempts, atomic state, recovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mohaq.beacons.store import (
    DONE,
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    BeaconStore,
    BeaconStoreError,
)


def test_add_is_idempotent_and_numbers_beacons(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    first = store.add({"a": 4, "b": 8}, genes=[1, 2], source_index=7, source_error=0.25)
    second = store.add({"a": 2, "b": 2}, origin="new")
    assert (first.id, second.id) == ("b000", "b001")
    assert store.add({"b": 8, "a": 4}).id == "b000"  # same bits: the same beacon
    assert [b.id for b in store.beacons()] == ["b000", "b001"]
    on_disk = json.loads((tmp_path / "beacons" / "b000" / "beacon.json").read_text())
    assert on_disk["bits"] == {"a": 4, "b": 8} and on_disk["status"] == PENDING
    assert on_disk["source_index"] == 7 and on_disk["source_error"] == 0.25
    assert store.get("b001").origin == "new"
    # No temporary files are left behind by the atomic writes.
    assert sorted(p.name for p in (tmp_path / "beacons" / "b000").iterdir()) == ["beacon.json"]


def test_status_lifecycle_and_attempts(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    beacon = store.add({"a": 4})
    assert store.mark_running(beacon.id).status == RUNNING
    # Success without a weights file is not success.
    state = store.mark_done(beacon.id, {"val/per": 0.3})
    assert state.status == FAILED and "wrote no weights.ckpt" in state.errors[0]
    assert [b.id for b in store.needs_training(max_attempts=2)] == [beacon.id]
    assert store.needs_training(max_attempts=1) == []
    store.mark_running(beacon.id)
    store.weights_path(beacon.id).write_bytes(b"ckpt")
    state = store.mark_done(beacon.id, {"val/per": 0.3})
    assert (state.status, state.attempts, state.metrics) == (DONE, 2, {"val/per": 0.3})
    assert [b.id for b in store.usable()] == [beacon.id]
    assert store.needs_training(max_attempts=5) == []
    # Reopening the store (a restart) sees the same state.
    again = BeaconStore(tmp_path).get(beacon.id)
    assert again.status == DONE and again.attempts == 2 and len(again.errors) == 1


def test_recovery_of_a_dead_process_and_errors(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    beacon = store.add({"a": 4})
    store.mark_running(beacon.id)
    assert BeaconStore(tmp_path).recover_interrupted() == [beacon.id]
    state = store.get(beacon.id)
    # Killed from outside: recorded, but the attempt does not count and it is retrained.
    assert (state.status, state.attempts, state.errors) == (INTERRUPTED, 0, [])
    assert state.interruptions == ["the beacon stage was killed during the retraining"]
    assert state.last_problem == state.interruptions[0]
    assert [b.id for b in store.needs_training(max_attempts=1)] == [beacon.id]
    assert store.recover_interrupted() == []
    with pytest.raises(BeaconStoreError, match="no beacon 'b009'.*known: \\['b000'\\]"):
        store.get("b009")
    (tmp_path / "beacons" / "b000" / "beacon.json").write_text("{not json")
    with pytest.raises(BeaconStoreError, match="cannot read beacon state"):
        store.beacons()
    assert BeaconStore(tmp_path / "empty").beacons() == []
