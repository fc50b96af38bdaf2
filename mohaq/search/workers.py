"""Parallel evaluation in worker processes.

``workers > 1`` starts a :class:`concurrent.futures.ProcessPoolExecutor` with
the ``spawn`` start method (safe with CUDA and with threads in the parent).
Each worker builds its evaluator once, in the pool's initializer, from a
picklable factory (for the PTQ stage a
:class:`~mohaq.search.evaluator.PTQEvaluatorSpec`: checkpoint path plus
DataModule class and arguments), so the checkpoint and the optimization set
are loaded once per process, not once per candidate. Where there are GPUs,
each worker is pinned to one of them through ``CUDA_VISIBLE_DEVICES``.

SLURM: any ``concurrent.futures``-style executor can run :func:`evaluate_remote`
(build the evaluator per call, or per job array). With submitit (optional,
``pip install mohaq[cluster]``)::

    import submitit
    executor = submitit.AutoExecutor(folder="runs/slurm")
    executor.update_parameters(gpus_per_node=1, timeout_min=60, slurm_partition="gpu")
    run_search(..., workers=8, executor=executor, evaluator_factory=spec)

See ``docs/cluster.md``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from mohaq.quant.assignment import BitAssignment

# The evaluator of *this worker process*, built once by the pool initializer.
# Process-local by design: each spawned worker owns exactly one evaluator.
_WORKER_EVALUATOR: Any = None


def _initialize_worker(factory: Callable[[], Any], devices: Any) -> None:
    global _WORKER_EVALUATOR
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    _WORKER_EVALUATOR = factory()


def evaluate_in_worker(bits: Mapping[str, int], split: str) -> tuple[float, float]:
    """Scores one assignment with this worker's evaluator; returns (error, seconds)."""
    if _WORKER_EVALUATOR is None:
        raise RuntimeError("worker process has no evaluator: the pool initializer did not run")
    start = time.perf_counter()
    error = _WORKER_EVALUATOR.evaluate(BitAssignment.from_dict(bits), split)
    return float(error), time.perf_counter() - start


def evaluate_remote(
    factory: Callable[[], Any], bits: Mapping[str, int], split: str
) -> tuple[float, float]:
    """Builds an evaluator and scores one assignment: for executors without an
    initializer (submitit / SLURM jobs)."""
    start = time.perf_counter()
    error = factory().evaluate(BitAssignment.from_dict(bits), split)
    return float(error), time.perf_counter() - start


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch without CUDA runtime
        return 0


def make_process_pool(factory: Callable[[], Any], workers: int) -> ProcessPoolExecutor:
    """A spawn-context pool of ``workers`` processes, each with its own evaluator
    (and its own GPU when there are at least ``workers`` GPUs... or round-robin
    over the GPUs there are).

    Raises:
        ValueError: if ``workers`` is below 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    context = multiprocessing.get_context("spawn")
    devices = None
    gpus = _gpu_count()
    if gpus > 0:
        devices = context.Queue()
        for rank in range(workers):
            devices.put(rank % gpus)
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_initialize_worker,
        initargs=(factory, devices),
    )


class TaskSubmitter:
    """Submits evaluations to a process pool (evaluator built per worker) or to
    a foreign executor such as submitit's (evaluator built per call)."""

    def __init__(self, executor: Executor, factory: Callable[[], Any], *, per_call: bool) -> None:
        self.executor = executor
        self.factory = factory
        self.per_call = per_call

    def submit(self, bits: Mapping[str, int], split: str) -> Any:
        if self.per_call:
            return self.executor.submit(evaluate_remote, self.factory, dict(bits), split)
        return self.executor.submit(evaluate_in_worker, dict(bits), split)
