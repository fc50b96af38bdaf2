"""Beacon retraining: one real QAT run per process (2 spawn processes on CPU,
tiny SRU, tiny data, 1 epoch), failures recorded and retried, the DDP job
file and its command line."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
from fault_tools import (
    fork,
    pid_alive,
    retrain_killed_or_crashes,
    retrain_sleeps,
    wait,
    wait_for,
)
from tiny_data import TinyDataModule

from mohaq.beacons.retraining import (
    RetrainingError,
    RetrainingRunner,
    RetrainJob,
    RetrainSpec,
    ddp_command,
    write_job,
)
from mohaq.beacons.store import DONE, FAILED, INTERRUPTED, BeaconStore
from mohaq.quant.assignment import BitAssignment
from mohaq.system import AcousticSystem


def tiny_system(**overrides: object) -> AcousticSystem:
    settings = dict(
        num_features=5, num_classes=6, cell="sru", hidden_size=16, num_layers=2,
        projection_size=8, dropout=0.0, learning_rate=0.01,
        weight_clipping="minmax", activation_clipping="minmax",  # fast: plumbing, not MMSE
    )  # fmt: skip
    settings.update(overrides)
    return AcousticSystem(**settings)


def float_checkpoint(directory: Path) -> tuple[Path, AcousticSystem, TinyDataModule]:
    pl.seed_everything(0)
    system, data = tiny_system(), TinyDataModule()
    trainer = pl.Trainer(
        default_root_dir=str(directory), accelerator="cpu", logger=False, max_epochs=2,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(system, datamodule=data)
    path = directory / "float.ckpt"
    trainer.save_checkpoint(path)
    return path, system, data


def fails_first_attempt(job: RetrainJob) -> dict[str, float]:
    """A picklable fake: raises on attempt 1, writes a checkpoint copy after."""
    if job.attempt == 1:
        raise RuntimeError(f"simulated failure of {job.beacon_id}")
    job.weights_path.write_bytes(Path(job.spec.checkpoint_path).read_bytes())
    return {"val/per": 0.5, "attempt": float(job.attempt)}


def sleeps(job: RetrainJob) -> dict[str, float]:
    import time

    time.sleep(60)
    return {}


def always_fails(job: RetrainJob) -> dict[str, float]:
    raise RuntimeError("out of memory (simulated)")


def test_two_real_retrainings_in_two_processes(tmp_path: Path) -> None:
    checkpoint, system, data = float_checkpoint(tmp_path)
    names = system.workload().names
    store = BeaconStore(tmp_path)
    two = store.add(BitAssignment.uniform(names, 2).to_dict())
    four = store.add(BitAssignment.uniform(names, 4).to_dict())
    spec = RetrainSpec.from_objects(
        checkpoint, system, data, epochs=1, accelerator="cpu", calibration_utterances=4
    )
    assert spec.resolved_learning_rate() == pytest.approx(0.001)  # a tenth of the float rate
    result = RetrainingRunner(store, spec, processes=2).run()
    assert {b.id: b.status for b in result.values()} == {two.id: DONE, four.id: DONE}
    for beacon in result.values():
        assert beacon.attempts == 1 and "val/per" in beacon.metrics
        assert beacon.metrics["learning_rate"] == pytest.approx(0.001)
        restored = AcousticSystem.load_from_checkpoint(store.weights_path(beacon.id))
        assert restored.bit_assignment.to_dict() == beacon.bits
        # Training curves of each retraining in the beacon's own TensorBoard folder.
        events = list(
            store.directory(beacon.id).glob("tensorboard/attempt_1/events.out.tfevents.*")
        )
        assert events
    # A second run finds nothing to do: finished beacons are reused.
    again = RetrainingRunner(store, spec, processes=2).run()
    assert all(b.attempts == 1 and b.status == DONE for b in again.values())


def test_failure_is_recorded_and_retried(tmp_path: Path) -> None:
    checkpoint, system, data = tmp_path / "float.ckpt", tiny_system(), TinyDataModule()
    checkpoint.write_bytes(b"not a real checkpoint; the fake only copies it")
    store = BeaconStore(tmp_path)
    beacon = store.add({"l0.weight": 4})
    spec = RetrainSpec.from_objects(checkpoint, system, data, epochs=1)
    # In-process: the retry logic is the same as with spawn processes, without
    # paying a Lightning import per attempt.
    result = RetrainingRunner(store, spec, retrain_fn=fails_first_attempt, in_process=True).run()
    final = result[beacon.id]
    assert final.status == DONE and final.attempts == 2
    assert final.errors == [f"RuntimeError: simulated failure of {beacon.id}"]
    assert final.metrics["attempt"] == 2.0

    broken = store.add({"l0.weight": 2})
    runner = RetrainingRunner(store, spec, max_attempts=2, retrain_fn=always_fails, in_process=True)
    result = runner.run()
    assert result[broken.id].status == FAILED and result[broken.id].attempts == 2
    assert result[broken.id].errors == ["RuntimeError: out of memory (simulated)"] * 2
    assert result[beacon.id].attempts == 2  # untouched: it was done
    # Out of attempts: a later run does not retry it.
    runner.run()
    assert store.get(broken.id).attempts == 2


def test_killed_process_is_recorded(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    beacon = store.add({"l0.weight": 16})
    spec = RetrainSpec("c", "a.B", {}, "a.C")
    runner = RetrainingRunner(store, spec, max_attempts=1, retrain_fn=sleeps, timeout_s=0.5)
    result = runner.run()
    assert result[beacon.id].status == FAILED
    assert result[beacon.id].errors == ["timed out after 0.5 s"]


def writes_weights(job: RetrainJob) -> dict[str, float]:
    job.weights_path.write_bytes(b"weights")
    return {"val/per": 0.25, "restart": float(job.restart), "attempt": float(job.attempt)}


def test_a_stage_killed_during_retraining_does_not_use_up_an_attempt(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    killed = store.add({"l0.weight": 8})
    finished = store.add({"l0.weight": 4})
    crashed = store.add({"l0.weight": 2})
    for beacon in (killed, finished, crashed):
        store.mark_running(beacon.id)  # the stage was killed -9 while these ran
    # One retraining had finished as the stage died, one had failed by itself.
    store.weights_path(finished.id).write_bytes(b"weights")
    (store.directory(finished.id) / "last_result.json").write_text('{"val/per": 0.5}')
    (store.directory(crashed.id) / "last_error.txt").write_text("RuntimeError: boom\n")
    spec = RetrainSpec("c", "a.B", {}, "a.C")
    runner = RetrainingRunner(
        store, spec, max_attempts=1, retrain_fn=writes_weights, in_process=True
    )
    result = runner.run()
    assert (result[finished.id].status, result[finished.id].metrics) == (DONE, {"val/per": 0.5})
    assert (result[crashed.id].status, result[crashed.id].errors) == (
        FAILED,
        ["RuntimeError: boom"],
    )
    again = result[killed.id]  # interrupted, then retrained as attempt 1 (max_attempts=1)
    assert again.status == DONE and again.attempts == 1
    assert again.interruptions == ["the beacon stage was killed during the retraining"]
    assert again.metrics["attempt"] == 1.0 and again.metrics["restart"] == 1.0
    assert RetrainJob(spec, "b000", {}, ".", attempt=1, restart=1).version == "attempt_1_restart_1"
    assert RetrainJob(spec, "b000", {}, ".", attempt=2).version == "attempt_2"


def test_ddp_job_file_and_command_line(tmp_path: Path) -> None:
    spec = RetrainSpec(
        checkpoint_path="float.ckpt",
        system_class="mohaq.system.AcousticSystem",
        system_hparams={"hidden_size": 16, "learning_rate": 0.002},
        datamodule_class="tiny_data.TinyDataModule",
        strategy="ddp",
        devices=2,
    )
    job = RetrainJob(spec, "b003", {"l0.weight": 4}, str(tmp_path), attempt=2)
    path = write_job(job)
    assert path == tmp_path / "job.json"
    assert RetrainJob.from_json(json.loads(path.read_text())) == job
    assert ddp_command(path) == [
        sys.executable,
        "-m",
        "mohaq.beacons.retraining",
        "--job",
        str(path),
    ]
    assert spec.resolved_learning_rate() == pytest.approx(0.0002)


def test_bad_settings() -> None:
    with pytest.raises(RetrainingError, match="epochs must be an integer >= 1, got 0"):
        RetrainSpec("c", "a.B", {}, "a.C", epochs=0)
    with pytest.raises(RetrainingError, match="learning_rate must be > 0"):
        RetrainSpec("c", "a.B", {}, "a.C", learning_rate=0.0)
    spec = RetrainSpec("c", "a.B", {}, "a.C")
    with pytest.raises(RetrainingError, match="max_attempts must be >= 1"):
        RetrainingRunner(BeaconStore("."), spec, max_attempts=0)
    with pytest.raises(RetrainingError, match="processes must be >= 1"):
        RetrainingRunner(BeaconStore("."), spec, processes=0)


def test_spec_drops_lightning_private_hparams() -> None:
    system, data = tiny_system(), TinyDataModule()
    system.hparams["_instantiator"] = "pytorch_lightning.cli.instantiate_module"  # as LightningCLI
    spec = RetrainSpec.from_objects("float.ckpt", system, data)
    assert "_instantiator" not in spec.system_hparams
    assert spec.system_hparams["hidden_size"] == 16
    assert spec.system_class == "mohaq.system.AcousticSystem"
    assert spec.datamodule_class == "tiny_data.TinyDataModule"


def test_killed_from_outside_is_interrupted_but_a_crash_is_a_failure(tmp_path: Path) -> None:
    store = BeaconStore(tmp_path)
    killed, crashed = store.add({"l0.weight": 8}), store.add({"l0.weight": 2})
    runner = RetrainingRunner(
        store, RetrainSpec("c", "a.B", {}, "a.C"), processes=2, max_attempts=1,
        retrain_fn=retrain_killed_or_crashes, poll_s=0.05,
    )  # fmt: skip
    result = runner.run()
    state = result[killed.id]
    # Not retried in this run (the out-of-memory killer would kill it again), no attempt used.
    assert (state.status, state.attempts, state.errors) == (INTERRUPTED, 0, [])
    assert "stopped by SIGKILL from outside the beacon stage" in state.interruptions[0]
    # A crash is the retraining's own failure: its attempt counts.
    assert result[crashed.id].status == FAILED and result[crashed.id].attempts == 1
    assert result[crashed.id].errors == ["the retraining process crashed (SIGSEGV)"]


def run_stage_with_a_sleeping_retraining(directory: Path) -> None:
    store = BeaconStore(directory)
    store.add({"l0.weight": 8})
    RetrainingRunner(store, RetrainSpec("c", "a.B", {}, "a.C"), retrain_fn=retrain_sleeps).run()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_retraining_dies_with_a_killed_stage(tmp_path: Path) -> None:
    stage = fork(run_stage_with_a_sleeping_retraining, tmp_path)
    pid_file = tmp_path / "beacons" / "b000" / "pid"
    wait_for(pid_file.exists, timeout_s=120)
    retraining = int(pid_file.read_text())
    try:
        assert pid_alive(retraining)
        os.kill(stage, signal.SIGKILL)
        wait(stage)
        wait_for(lambda: not pid_alive(retraining), timeout_s=10)
    finally:
        if pid_alive(retraining):  # the test failed: leave no orphan behind
            os.kill(retraining, signal.SIGKILL)


def test_the_divergence_bound_is_one_number_across_settings_spec_and_callback() -> None:
    from mohaq.beacons.selection import BeaconConfigError
    from mohaq.beacons.settings import DEFAULT_MAX_LOSS_RATIO, BeaconSettings
    from mohaq.callbacks import divergence

    assert DEFAULT_MAX_LOSS_RATIO == divergence.DEFAULT_MAX_LOSS_RATIO
    assert RetrainSpec("c", "a.B", {}, "a.C").max_loss_ratio == DEFAULT_MAX_LOSS_RATIO
    with pytest.raises(
        BeaconConfigError, match=r"retrain_max_loss_ratio must be > 1 or null, got 0.5"
    ):
        BeaconSettings(retrain_max_loss_ratio=0.5)


def presses_ctrl_c(job: RetrainJob) -> dict[str, float]:
    raise KeyboardInterrupt


def test_ctrl_c_during_an_in_process_retraining_stops_the_stage_without_using_an_attempt(
    tmp_path: Path,
) -> None:
    store = BeaconStore(tmp_path)
    beacon = store.add({"l0.weight": 4})
    runner = RetrainingRunner(
        store, RetrainSpec("c", "a.B", {}, "a.C"), retrain_fn=presses_ctrl_c, in_process=True
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    state = store.get(beacon.id)
    assert (state.status, state.attempts, state.errors) == (INTERRUPTED, 0, [])
    assert state.interruptions == [
        "the beacon stage stopped (KeyboardInterrupt) during the retraining"
    ]
    assert not (store.directory(beacon.id) / "last_error.txt").exists()
