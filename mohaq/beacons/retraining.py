"""Quantization-aware retraining of beacons, each as its own Lightning run in
its own process.

Why separate processes: a retraining is a full ``Trainer.fit`` (its own
TensorBoard run, its own device, possibly its own DDP group), and Lightning's
DDP launcher re-runs ``sys.argv`` in every rank, which from inside a search
process would re-run the whole search (see ECOSYSTEM.md). So:

* :func:`retrain_beacon` does one retraining in the current process: it
  rebuilds the model and the DataModule from picklable specs
  (:class:`RetrainSpec`: class import paths plus ``hparams``), starts from the
  float checkpoint's weights through the QAT callback's ``init_checkpoint``,
  trains ``epochs`` epochs, logs curves to TensorBoard in the beacon's folder
  and writes ``weights.ckpt`` atomically.
* :class:`RetrainingRunner` runs several at once: one ``spawn`` process per
  beacon, at most ``processes`` at a time; with GPUs each process sees one GPU
  (``CUDA_VISIBLE_DEVICES``), on CPU the cores are split between them. Failed
  retrainings are recorded in the :class:`~mohaq.beacons.store.BeaconStore`
  and retried up to ``max_attempts``; they never raise into the search. A
  retraining stopped from outside is recorded as interrupted (its attempt does
  not count) and retrained when the stage runs again (``--resume``). On Linux
  a retraining process dies with the stage (``PR_SET_PDEATHSIG``): a killed
  stage leaves no orphan training into its folders.
* DDP for one beacon over N devices (``ddp_devices=N``): the runner writes the
  job to ``beacons/<id>/job.json`` and runs it as its own command line::

      python -m mohaq.beacons.retraining --job runs/search/beacons/b000/job.json

  with ``strategy="ddp", devices=N``; Lightning's launcher then re-runs that
  command, not the search, in each rank. The same command can be submitted
  by hand (or to SLURM) for a large retraining.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mohaq.beacons.settings import DEFAULT_MAX_LOSS_RATIO, DEFAULT_RETRAIN_EPOCHS
from mohaq.beacons.store import DONE, FAILED, RUNNING, TENSORBOARD, Beacon, BeaconStore
from mohaq.search.evaluators import import_object, import_path, init_arguments
from mohaq.search.executors import gpu_count
from mohaq.search.records import write_json_atomic

log = logging.getLogger(__name__)

RESULT = "last_result.json"
ERROR = "last_error.txt"
JOB = "job.json"
#: Exit status of a retraining process stopped by Ctrl-C (SIGINT): an interruption.
INTERRUPTED_EXIT = 75
#: Signals that stop a process from outside (a user, a job scheduler, the
#: out-of-memory killer); a process ending on another signal crashed by itself.
OUTSIDE_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}
)

#: Default retraining rate as a fraction of the float model's own learning rate.
DEFAULT_LR_FRACTION = 0.1


class RetrainingError(ValueError):
    """An invalid retraining setting."""


@dataclass(frozen=True)
class RetrainSpec:
    """Everything a retraining process needs, picklable and JSON-able.

    Attributes:
        checkpoint_path: the float checkpoint the QAT starts from.
        system_class: import path of the LightningModule (``mohaq.system.AcousticSystem``).
        system_hparams: its init arguments (``dict(system.hparams)``).
        datamodule_class: import path of the DataModule.
        datamodule_hparams: its init arguments (``dict(datamodule.hparams)``).
        epochs: QAT epochs (default 3 for the quickstart; MOHAQ used 20).
        learning_rate: Adam's rate for the retraining; None: a tenth of the
            float model's ``learning_rate`` (fine-tuning from converged float
            weights: large enough to adapt them to the quantization grid in a
            few epochs, small enough to stay near the float solution).
        fixed_bits: precision of biases and element-wise vectors.
        calibration_utterances: optimization-set utterances for the QAT callback's calibration.
        accelerator, devices, strategy: Trainer arguments (``devices`` per retraining).
        seed: ``seed_everything`` seed.
        trainer_kwargs: extra Trainer arguments (e.g. ``limit_train_batches``,
            ``gradient_clip_val``).
        max_loss_ratio: the retraining diverged (and fails) when its training loss
            exceeds this multiple of its start; None: only non-finite values
            (see :class:`~mohaq.callbacks.divergence.DivergenceDetector`).
        convert: for a user's own LightningModule, the
            :func:`mohaq.convert.make_quantizable` options (``granularity``):
            the float checkpoint is loaded into the model as the user wrote
            it, then the model is converted before training; None: one of
            the toolkit's systems, quantizable as built.
    """

    checkpoint_path: str
    system_class: str
    system_hparams: Mapping[str, Any]
    datamodule_class: str
    datamodule_hparams: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = DEFAULT_RETRAIN_EPOCHS
    learning_rate: float | None = None
    fixed_bits: int | None = 16
    calibration_utterances: int = 64
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    seed: int = 0
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_loss_ratio: float | None = DEFAULT_MAX_LOSS_RATIO
    convert: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise RetrainingError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise RetrainingError(f"learning_rate must be > 0 or None, got {self.learning_rate!r}")
        if self.devices < 1:
            raise RetrainingError(f"devices must be >= 1, got {self.devices!r}")

    @classmethod
    def from_objects(
        cls, checkpoint_path: str | Path, system: Any, datamodule: Any, **settings: Any
    ) -> RetrainSpec:
        """A spec that rebuilds ``system`` and ``datamodule`` from their ``hparams``."""
        return cls(
            checkpoint_path=str(checkpoint_path),
            system_class=import_path(system),
            system_hparams=init_arguments(system),
            datamodule_class=import_path(datamodule),
            datamodule_hparams=init_arguments(datamodule),
            **settings,
        )

    def resolved_learning_rate(self) -> float | None:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        base = self.system_hparams.get("learning_rate")
        return None if base is None else DEFAULT_LR_FRACTION * float(base)


@dataclass(frozen=True)
class RetrainJob:
    """One attempt at retraining one beacon.

    Attributes:
        attempt: the attempt number (interrupted attempts do not count).
        restart: how many retrainings of this beacon were interrupted before.
    """

    spec: RetrainSpec
    beacon_id: str
    bits: Mapping[str, int]
    beacon_dir: str
    attempt: int = 1
    restart: int = 0

    @property
    def weights_path(self) -> Path:
        return Path(self.beacon_dir) / "weights.ckpt"

    @property
    def version(self) -> str:
        """The TensorBoard version (folder) of this retraining."""
        return f"attempt_{self.attempt}" + (f"_restart_{self.restart}" if self.restart else "")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RetrainJob:
        return cls(
            spec=RetrainSpec(**dict(data["spec"])),
            beacon_id=str(data["beacon_id"]),
            bits={str(k): int(v) for k, v in dict(data["bits"]).items()},
            beacon_dir=str(data["beacon_dir"]),
            attempt=int(data.get("attempt", 1)),
            restart=int(data.get("restart", 0)),
        )


def retrain_beacon(job: RetrainJob) -> dict[str, float]:
    """Retrains one beacon with QAT in the current process (one Lightning run).

    Returns:
        Final metrics: the Trainer's scalar ``callback_metrics`` (``val/per``,
        ``train/loss``, ...) plus ``seconds``, ``epochs`` and ``learning_rate``.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    from mohaq.callbacks.divergence import DivergenceDetector
    from mohaq.callbacks.qat import QuantizationAwareTraining

    spec = job.spec
    pl.seed_everything(spec.seed, workers=True)
    hparams = dict(spec.system_hparams)
    rate = spec.resolved_learning_rate()
    if rate is not None:
        hparams["learning_rate"] = rate
    system = import_object(spec.system_class)(**hparams)
    init_checkpoint: str | None = spec.checkpoint_path
    if spec.convert is not None:
        # A user's model: its float checkpoint holds torch's layers, so the
        # weights go in before the layers are swapped for quantizable ones
        # (and before the Trainer builds the optimizer over them).
        from mohaq.checkpoints import load_model_weights
        from mohaq.convert import make_quantizable

        load_model_weights(system, spec.checkpoint_path)
        system = make_quantizable(system, **dict(spec.convert))
        init_checkpoint = None
    datamodule = import_object(spec.datamodule_class)(**dict(spec.datamodule_hparams))
    beacon_dir = Path(job.beacon_dir)
    logger = TensorBoardLogger(
        save_dir=str(beacon_dir),
        name=TENSORBOARD,
        version=job.version,
        default_hp_metric=False,
    )
    callback = QuantizationAwareTraining(
        bits=dict(job.bits),
        fixed_bits=spec.fixed_bits,
        calibration_utterances=spec.calibration_utterances,
        init_checkpoint=init_checkpoint,
    )
    trainer_kwargs: dict[str, Any] = {
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    }
    trainer_kwargs.update(dict(spec.trainer_kwargs))
    trainer = pl.Trainer(
        max_epochs=spec.epochs,
        accelerator=spec.accelerator,
        devices=spec.devices,
        strategy=spec.strategy,
        logger=logger,
        # A diverged retraining raises (a failed attempt with that reason) and
        # writes no weights.
        callbacks=[callback, DivergenceDetector(max_loss_ratio=spec.max_loss_ratio)],
        default_root_dir=str(beacon_dir),
        **trainer_kwargs,
    )
    start = time.perf_counter()
    trainer.fit(system, datamodule=datamodule)
    temporary = job.weights_path.with_name(job.weights_path.name + ".tmp")
    trainer.save_checkpoint(temporary)  # collective under DDP; rank 0 writes
    if trainer.is_global_zero:
        os.replace(temporary, job.weights_path)
    metrics: dict[str, float] = {}
    for key, value in trainer.callback_metrics.items():
        try:
            metrics[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    metrics["seconds"] = time.perf_counter() - start
    metrics["epochs"] = float(trainer.current_epoch)
    if rate is not None:
        metrics["learning_rate"] = rate
    return metrics


def _is_rank_zero() -> bool:
    return all(int(os.environ.get(v, "0") or 0) == 0 for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def run_job(
    retrain_fn: Callable[[RetrainJob], Mapping[str, float]],
    job: RetrainJob,
    gpu: int | None = None,
    threads: int | None = None,
) -> None:
    """Body of a retraining process: pins the device, runs ``retrain_fn`` and
    leaves ``last_result.json`` (success) or ``last_error.txt`` (failure) in the
    beacon folder for the parent."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads:
        import torch

        torch.set_num_threads(threads)
    directory = Path(job.beacon_dir)
    try:
        metrics = dict(retrain_fn(job))
    except KeyboardInterrupt as error:
        # Ctrl-C reaches every process of the terminal: an interruption, not a failure.
        raise SystemExit(INTERRUPTED_EXIT) from error
    except BaseException as error:
        if _is_rank_zero():
            (directory / ERROR).write_text(
                f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}", encoding="utf-8"
            )
        raise SystemExit(1) from error
    if _is_rank_zero():
        write_json_atomic(directory / RESULT, {k: float(v) for k, v in metrics.items()})


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the stage that started it dies (even by
    SIGKILL), so a killed stage leaves no orphan retraining behind."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no usable libc
        return
    if os.getppid() != parent:  # the stage died before the request took effect
        os._exit(INTERRUPTED_EXIT)


def child_main(
    retrain_fn: Callable[[RetrainJob], Mapping[str, float]],
    job: RetrainJob,
    gpu: int | None,
    threads: int | None,
    parent: int,
) -> None:
    """Entry point of a spawned retraining process."""
    _die_with_parent(parent)
    run_job(retrain_fn, job, gpu, threads)


def ddp_command(job_file: str | Path) -> list[str]:
    """The command line that runs one job file (DDP-safe: ranks re-run it)."""
    return [sys.executable, "-m", "mohaq.beacons.retraining", "--job", str(job_file)]


def write_job(job: RetrainJob, path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else Path(job.beacon_dir) / JOB
    write_json_atomic(path, job.to_json())
    return path


class _Finished:
    """An in-process retraining, already run when created."""

    def __init__(
        self, retrain_fn: Callable[[RetrainJob], Mapping[str, float]], job: RetrainJob
    ) -> None:
        try:
            run_job(retrain_fn, job)
            self.exitcode = 0
        except SystemExit as stop:
            if isinstance(stop.__cause__, KeyboardInterrupt):
                raise stop.__cause__ from None  # Ctrl-C stops the stage itself
            self.exitcode = int(stop.code or 0)

    def kill(self) -> None:
        pass

    def join(self) -> None:
        pass


class _Handle:
    """A running retraining: a spawn Process or a command-line subprocess."""

    def __init__(self, process: Any, started: float | None = None) -> None:
        self.process = process
        self.started = time.monotonic() if started is None else started

    def exitcode(self) -> int | None:
        if isinstance(self.process, subprocess.Popen):
            return self.process.poll()
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()
        if isinstance(self.process, subprocess.Popen):
            self.process.wait()
        else:
            self.process.join()


class RetrainingRunner:
    """Retrains beacons of a store concurrently, one process per beacon.

    Args:
        store: the run's beacon store (the source of truth for statuses).
        spec: how to rebuild model and data, and the QAT settings.
        processes: retrainings at once; None: one per GPU, or 1 on CPU.
        max_attempts: attempts per beacon before it stays ``failed``.
        retrain_fn: a picklable ``job -> metrics`` function (default
            :func:`retrain_beacon`; tests pass fakes).
        timeout_s: kill a retraining after this many seconds (None: no limit).
        ddp_devices: > 1 trains each beacon with ``strategy="ddp"`` over this
            many devices as its own command line (one beacon at a time).
        in_process: run the retrainings one after another in this process
            (debugging, tests; no isolation: a crash here is the search's crash).
        poll_s: how often finished processes are looked for.
        points: the workload's point order, for the bits in the progress lines.

    Raises:
        RetrainingError: for invalid counts.
    """

    def __init__(
        self,
        store: BeaconStore,
        spec: RetrainSpec,
        *,
        processes: int | None = None,
        max_attempts: int = 2,
        retrain_fn: Callable[[RetrainJob], Mapping[str, float]] = retrain_beacon,
        timeout_s: float | None = None,
        ddp_devices: int = 1,
        in_process: bool = False,
        poll_s: float = 0.2,
        points: Sequence[str] = (),
    ) -> None:
        if processes is not None and (isinstance(processes, bool) or processes < 1):
            raise RetrainingError(f"processes must be >= 1 or None, got {processes!r}")
        if max_attempts < 1:
            raise RetrainingError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if ddp_devices < 1:
            raise RetrainingError(f"ddp_devices must be >= 1, got {ddp_devices!r}")
        if ddp_devices > 1 and retrain_fn is not retrain_beacon:
            raise RetrainingError(
                "ddp_devices > 1 runs the command line, which uses retrain_beacon"
            )
        self.store = store
        self.spec = spec
        self.gpus = gpu_count()
        self.processes = processes if processes is not None else max(1, self.gpus)
        self.max_attempts = max_attempts
        self.retrain_fn = retrain_fn
        self.timeout_s = timeout_s
        self.ddp_devices = ddp_devices
        self.in_process = in_process
        self.poll_s = poll_s
        self.points = tuple(points)

    def _describe(self, beacon: Beacon) -> str:
        order = self.points or tuple(sorted(beacon.bits))
        return " ".join(str(beacon.bits.get(p, "-")) for p in order)

    def _report_finish(self, beacon: Beacon, seconds: float) -> None:
        """One line per finished retraining (the stage's progress)."""
        if beacon.status == DONE:
            per = beacon.metrics.get("val/per")
            shown = "" if per is None else f", validation PER {100 * per:.2f}%"
            log.info("beacon %s: retrained in %.0f s%s", beacon.id, seconds, shown)
        elif beacon.status == FAILED:
            then = (
                f"retrying (attempt {beacon.attempts + 1} of {self.max_attempts})"
                if beacon.attempts < self.max_attempts
                else "no attempt left"
            )
            problem = beacon.last_problem.strip().splitlines()[0] if beacon.last_problem else "?"
            log.info("beacon %s: failed after %.0f s (%s); %s", beacon.id, seconds, problem, then)
        else:
            log.info("beacon %s: %s (%s)", beacon.id, beacon.status, beacon.last_problem)

    def _job(self, beacon: Beacon) -> RetrainJob:
        spec = self.spec
        if self.ddp_devices > 1:
            spec = replace(spec, strategy="ddp", devices=self.ddp_devices)
        return RetrainJob(
            spec=spec,
            beacon_id=beacon.id,
            bits=dict(beacon.bits),
            beacon_dir=str(self.store.directory(beacon.id)),
            attempt=beacon.attempts,
            restart=len(beacon.interruptions),
        )

    def _start(self, beacon_id: str, slot: int) -> _Handle:
        beacon = self.store.mark_running(beacon_id)
        log.info(
            "beacon %s: retraining with QAT, %d epoch(s), attempt %d of %d; bits %s",
            beacon_id,
            self.spec.epochs,
            beacon.attempts,
            self.max_attempts,
            self._describe(beacon),
        )
        directory = self.store.directory(beacon_id)
        for name in (RESULT, ERROR):
            (directory / name).unlink(missing_ok=True)
        job = self._job(beacon)
        if self.in_process:
            started = time.monotonic()
            return _Handle(_Finished(self.retrain_fn, job), started)
        if self.ddp_devices > 1:
            return _Handle(subprocess.Popen(ddp_command(write_job(job))))
        gpu = slot % self.gpus if self.gpus else None
        threads = None if self.gpus else max(1, (os.cpu_count() or 1) // self.processes)
        context = multiprocessing.get_context("spawn")
        process = context.Process(
            target=child_main,
            args=(self.retrain_fn, job, gpu, threads, os.getpid()),
            name=f"mohaq-retrain-{beacon_id}",
        )
        process.start()
        return _Handle(process)

    def _finish(self, beacon_id: str, code: int | None, note: str = "") -> Beacon:
        """Records how a retraining ended: done, failed by itself (the attempt
        counts) or stopped from outside (interrupted: it does not)."""
        directory = self.store.directory(beacon_id)
        result, error = directory / RESULT, directory / ERROR
        if code == 0 and result.exists():
            return self.store.mark_done(beacon_id, json.loads(result.read_text()))
        if error.exists():
            message = error.read_text(encoding="utf-8").strip().splitlines()[0]
        elif note:
            message = note
        elif code == INTERRUPTED_EXIT:
            return self.store.mark_interrupted(
                beacon_id, "the retraining process was interrupted (Ctrl-C)"
            )
        elif code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if -code in OUTSIDE_SIGNALS:
                return self.store.mark_interrupted(
                    beacon_id,
                    f"the retraining process was stopped by {name} from outside the beacon stage "
                    "(a user, the job scheduler or the out-of-memory killer)",
                )
            message = f"the retraining process crashed ({name})"
        else:
            message = f"the retraining process exited with code {code} without a result"
        return self.store.mark_failed(beacon_id, message)

    def _recover(self) -> None:
        """Beacons left ``running`` by a stage that was killed: a retraining that
        finished meanwhile is taken as it ended, any other is interrupted."""
        for beacon in self.store.beacons():
            if beacon.status != RUNNING:
                continue
            directory = self.store.directory(beacon.id)
            try:
                if (directory / RESULT).exists():
                    metrics = json.loads((directory / RESULT).read_text())
                    self.store.mark_done(beacon.id, metrics)
                    continue
                if (directory / ERROR).exists():
                    self._finish(beacon.id, 1)
                    continue
            except (OSError, ValueError):
                pass  # half-written by the dying process: retrain it
            self.store.mark_interrupted(
                beacon.id, "the beacon stage was killed during the retraining"
            )

    def run(self, beacon_ids: Sequence[str] | None = None) -> dict[str, Beacon]:
        """Retrains the beacons that need it (all, or those in ``beacon_ids``):
        pending, interrupted, and failed ones with attempts left; finished ones
        are left alone. A failure is retried at once (up to ``max_attempts``);
        an interruption waits for the next run of the stage. Returns id -> final
        state; never raises for a failed retraining.

        Raises:
            KeyboardInterrupt and other errors of the stage itself, after
            stopping the running retrainings and recording them as interrupted.
        """
        self._recover()
        wanted = None if beacon_ids is None else set(beacon_ids)
        queue = [
            b.id
            for b in self.store.needs_training(self.max_attempts)
            if wanted is None or b.id in wanted
        ]
        slots = 1 if self.ddp_devices > 1 else self.processes
        if queue:
            log.info(
                "retraining %d beacon(s), %d at a time%s",
                len(queue),
                min(slots, len(queue)),
                " (in this process)" if self.in_process else " (one process each)",
            )
        running: dict[int, tuple[str, _Handle]] = {}
        try:
            while queue or running:
                for slot in range(slots):
                    if slot not in running and queue:
                        beacon_id = queue.pop(0)
                        running[slot] = (beacon_id, self._start(beacon_id, slot))
                if not self.in_process:
                    time.sleep(self.poll_s)
                for slot, (beacon_id, handle) in list(running.items()):
                    code = handle.exitcode()
                    note = ""
                    if code is None and self.timeout_s is not None:
                        if time.monotonic() - handle.started > self.timeout_s:
                            handle.kill()
                            code, note = handle.exitcode(), f"timed out after {self.timeout_s:g} s"
                    if code is None:
                        continue
                    del running[slot]
                    beacon = self._finish(beacon_id, code, note)
                    self._report_finish(beacon, time.monotonic() - handle.started)
                    if beacon.status == FAILED and beacon.attempts < self.max_attempts:
                        queue.append(beacon_id)
        except BaseException as error:
            for _, handle in running.values():
                handle.kill()
            self.store.recover_interrupted(
                f"the beacon stage stopped ({type(error).__name__}) during the retraining"
            )
            raise
        every = {b.id: b for b in self.store.beacons()}
        return {i: every[i] for i in every if wanted is None or i in wanted}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mohaq.beacons.retraining --job beacons/<id>/job.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m mohaq.beacons.retraining",
        description="Retrain one beacon with QAT from a job file (DDP-safe).",
    )
    parser.add_argument("--job", required=True, help="job.json written by the beacon stage")
    args = parser.parse_args(argv)
    job = RetrainJob.from_json(json.loads(Path(args.job).read_text(encoding="utf-8")))
    run_job(retrain_beacon, job)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised as a command line
    sys.exit(main())
