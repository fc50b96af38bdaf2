"""Where evaluations run: in the search process, in worker processes, or as
submitit jobs (SLURM, or local processes).

Every executor turns ``submit(bits, split)`` into a
:class:`concurrent.futures.Future` of ``(EvaluationResult, seconds)``, so the
search loop is the same whatever runs the evaluations:

* :class:`InProcess`: the evaluator lives in the search process and runs each
  candidate as it is submitted (the future is already done); sequential runs
  are exactly reproducible for a seed.
* :class:`ProcessPool`: ``workers`` processes started with the ``spawn``
  method (safe with CUDA and with threads in the parent); each builds its
  evaluator once, in the pool's initializer, from a picklable factory (for the
  PTQ stage a :class:`~mohaq.search.evaluators.PTQEvaluatorSpec`), so the
  checkpoint and the optimization set are loaded once per process; where there
  are GPUs, worker k sees GPU ``k mod #GPUs`` only.
* :class:`Submitit`: each candidate is a submitit job that builds its
  evaluator and scores it (``pip install mohaq[cluster]``); on a cluster
  ``cluster="slurm"``, on one machine ``cluster="local"``. See docs/cluster.md.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mohaq.quant.assignment import BitAssignment
from mohaq.search.evaluators import EvaluationResult, Evaluator

Timed = tuple[EvaluationResult, float]
EvaluatorFactory = Callable[[], Evaluator]


class ExecutorError(ValueError):
    """An executor that cannot be built with the given settings."""


class ExecutorOptions:
    """Base of the executor options (each a dataclass)."""


@dataclass
class InProcess(ExecutorOptions):
    """Evaluate in the search process, one candidate at a time."""


@dataclass
class ProcessPool(ExecutorOptions):
    """Worker processes (spawn), each loading the model and data once; one per GPU
    where there are GPUs."""


@dataclass
class Submitit(ExecutorOptions):
    """submitit jobs, one per candidate, each building its evaluator.

    Args:
        folder: where submitit keeps its job files (default: ``<run_dir>/submitit``).
        cluster: ``"slurm"``, ``"local"`` (processes on this machine) or
            ``"debug"`` (in this process); None: SLURM where available, else local.
        parameters: ``update_parameters`` arguments, e.g. ``{timeout_min: 60,
            slurm_partition: gpu, gpus_per_node: 1}``.
    """

    folder: str | None = None
    cluster: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


_NAMES: dict[str, type[ExecutorOptions]] = {
    "inline": InProcess,
    "in_process": InProcess,
    "inprocess": InProcess,
    "process": ProcessPool,
    "processes": ProcessPool,
    "process_pool": ProcessPool,
    "processpool": ProcessPool,
    "submitit": Submitit,
}


def resolve_executor(value: ExecutorOptions | str, workers: int) -> ExecutorOptions:
    """Typed executor options from options or a name (``auto``: in-process for
    one worker, a process pool for more).

    Raises:
        ExecutorError: for an unknown name (lists the valid ones).
    """
    if isinstance(value, ExecutorOptions):
        return value
    name = str(value).strip().lower()
    if name == "auto":
        return InProcess() if workers == 1 else ProcessPool()
    if name not in _NAMES:
        raise ExecutorError(
            f"unknown executor {value!r}; valid: auto, inline, process, submitit "
            "(or InProcess / ProcessPool / Submitit options)"
        )
    return _NAMES[name]()


def executor_name(options: ExecutorOptions) -> str:
    return {InProcess: "inline", ProcessPool: "process", Submitit: "submitit"}.get(
        type(options), type(options).__name__
    )


def _timed(
    evaluator: Evaluator, bits: Mapping[str, int], split: str, stop_above: float | None
) -> Timed:
    start = time.perf_counter()
    assignment = BitAssignment.from_dict(bits)
    if stop_above is None:
        result = evaluator.evaluate(assignment, split)
    else:
        result = evaluator.evaluate(assignment, split, stop_above=stop_above)
    return result, time.perf_counter() - start


# -- worker processes ---------------------------------------------------------------------
# The evaluator of *this worker process*, built once by the pool initializer.
# Process-local by design: each spawned worker owns exactly one evaluator.
_WORKER_EVALUATOR: Evaluator | None = None


def _initialize_worker(factory: EvaluatorFactory, devices: Any) -> None:
    global _WORKER_EVALUATOR
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    _WORKER_EVALUATOR = factory()


def evaluate_in_worker(
    bits: Mapping[str, int], split: str, stop_above: float | None = None
) -> Timed:
    """Scores one assignment with this worker process's evaluator."""
    if _WORKER_EVALUATOR is None:
        raise RuntimeError("worker process has no evaluator: the pool initializer did not run")
    return _timed(_WORKER_EVALUATOR, bits, split, stop_above)


def evaluate_remote(
    factory: EvaluatorFactory, bits: Mapping[str, int], split: str, stop_above: float | None = None
) -> Timed:
    """Builds an evaluator and scores one assignment (a submitit job's body)."""
    return _timed(factory(), bits, split, stop_above)


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch without a CUDA runtime
        return 0


# -- the running executors ----------------------------------------------------------------
class EvaluationExecutor:
    """Runs evaluations; ``submit`` returns a future of ``(result, seconds)``;
    ``stop_above`` is passed to the evaluator (multi-fidelity)."""

    def submit(
        self, bits: Mapping[str, int], split: str, stop_above: float | None = None
    ) -> Future[Timed]:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stops what this executor started; pending evaluations are cancelled."""


class InlineExecutor(EvaluationExecutor):
    """Evaluates at submission in this process (the future is already done)."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def submit(
        self, bits: Mapping[str, int], split: str, stop_above: float | None = None
    ) -> Future[Timed]:
        future: Future[Timed] = Future()
        try:
            future.set_result(_timed(self.evaluator, bits, split, stop_above))
        except BaseException as error:  # surfaces at future.result(), as in a pool
            future.set_exception(error)
        return future


class PoolExecutor(EvaluationExecutor):
    """A spawn-context process pool of ``workers`` evaluators (one GPU each, round-robin)."""

    def __init__(self, factory: EvaluatorFactory, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        devices = None
        gpus = gpu_count()
        if gpus > 0:
            devices = context.Queue()
            for rank in range(workers):
                devices.put(rank % gpus)
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_initialize_worker,
            initargs=(factory, devices),
        )

    def submit(
        self, bits: Mapping[str, int], split: str, stop_above: float | None = None
    ) -> Future[Timed]:
        return self.pool.submit(evaluate_in_worker, dict(bits), split, stop_above)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class SubmititExecutor(EvaluationExecutor):
    """submitit jobs behind real futures: a thread per job in flight waits for
    its result (submitit's jobs are not ``concurrent.futures`` futures)."""

    def __init__(self, factory: EvaluatorFactory, workers: int, options: Submitit, run_dir: Path):
        try:
            import submitit
        except ImportError as error:
            raise ExecutorError(
                "the submitit executor needs submitit: pip install 'mohaq[cluster]'"
            ) from error
        folder = Path(options.folder) if options.folder else Path(run_dir) / "submitit"
        self.jobs = submitit.AutoExecutor(folder=str(folder), cluster=options.cluster)
        if options.parameters:
            self.jobs.update_parameters(**dict(options.parameters))
        self.factory = factory
        self.waiters = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="submitit")
        self._lock = threading.Lock()

    def _run(self, bits: Mapping[str, int], split: str, stop_above: float | None) -> Timed:
        with self._lock:  # one submission at a time: submitit writes job files
            job = self.jobs.submit(evaluate_remote, self.factory, dict(bits), split, stop_above)
        return job.result()

    def submit(
        self, bits: Mapping[str, int], split: str, stop_above: float | None = None
    ) -> Future[Timed]:
        return self.waiters.submit(self._run, dict(bits), split, stop_above)

    def shutdown(self) -> None:
        self.waiters.shutdown(wait=True, cancel_futures=True)


def open_executor(
    options: ExecutorOptions,
    *,
    workers: int,
    run_dir: Path,
    evaluator: Evaluator | None = None,
    factory: EvaluatorFactory | None = None,
) -> EvaluationExecutor:
    """The executor of ``options``.

    Args:
        options: which executor.
        workers: evaluations in flight.
        run_dir: the search's run directory (submitit's default folder).
        evaluator: an evaluator built in this process (in-process only).
        factory: a picklable callable building an evaluator (any executor).

    Raises:
        ExecutorError: no evaluator or factory, or an in-process evaluator
            asked to run in other processes.
    """
    if isinstance(options, InProcess):
        if evaluator is None:
            if factory is None:
                raise ExecutorError("give an evaluator or an evaluator factory")
            evaluator = factory()
        return InlineExecutor(evaluator)
    if factory is None:
        raise ExecutorError(
            f"the {executor_name(options)} executor runs evaluations in other processes: it needs "
            "a picklable evaluator factory (a checkpoint path and a DataModule, or "
            "BuiltEvaluator(...) for a picklable evaluator), not an in-process evaluator"
        )
    if isinstance(options, ProcessPool):
        return PoolExecutor(factory, workers)
    if isinstance(options, Submitit):
        return SubmititExecutor(factory, workers, options, run_dir)
    raise ExecutorError(f"unknown executor options {options!r}")
