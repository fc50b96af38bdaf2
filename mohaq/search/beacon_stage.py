"""MOHAQ step 2, the beacon-based search: :func:`run_beacon_search`.

1. Read the inference-only run's evaluations (``<search_run_dir>/evaluations.jsonl``,
   left untouched).
2. Select beacons (:func:`~mohaq.search.beacons.select_beacons`) and retrain
   them with QAT from the float checkpoint, concurrently, one Lightning run per
   process (:mod:`mohaq.search.retraining`), into ``<search_run_dir>/beacons/<id>/``.
3. Continue the search with the beacon-aware evaluator in
   ``<search_run_dir>/beacon_search/`` (its own ``evaluations.jsonl``, every
   record naming its evaluator ``"beacon:<id>"`` or ``"ptq"``), seeded with the
   inference-only front.
4. Report both fronts: ``fronts.png`` and ``beacon_summary.md`` in ``search_run_dir``.

Restarting with ``resume=True`` reuses finished beacons, retries failed ones
(up to ``max_attempts``) and resumes the beacon-aware search from its log. A
beacon whose retraining keeps failing is recorded and skipped: candidates near
it keep their inference-only error.

Knobs and defaults:

* ``num_beacons=4``: beacons selected from the inference-only front.
* ``distance_threshold=5``: MOHAQ used 5 or 6 precision levels (L1 over weights).
* ``retrain_epochs=3``: enough for the quickstart; MOHAQ retrained 20 epochs.
* ``retrain_lr=None``: a tenth of the float model's learning rate (1e-4 for
  MOHAQ's recipe at 1e-3): fine-tuning from converged weights.
* ``beacon_ranks=2``: beacons come from the first two non-dominated ranks.
* ``beacon_separation=None``: minimum distance between beacons, default
  ``distance_threshold`` so their neighbourhoods cover different parts of the front.
* ``promising_max_error`` / ``promising_limits``: beyond feasibility, what a
  candidate must meet to get a beacon (e.g. ``{"min_speedup": 4}``).
* ``max_new_beacons=2``: promising candidates with no beacon within reach may
  become beacons during the search.
* ``max_attempts=2``: retraining attempts per beacon.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload
from mohaq.search.beacon_evaluator import (
    DEFAULT_DISTANCE_THRESHOLD,
    BeaconAwareEvaluator,
    BeaconWeightsPTQ,
    bits_key,
)
from mohaq.search.beacon_report import FrontComparison, compare_fronts, write_beacon_report
from mohaq.search.beacon_store import Beacon, BeaconStore
from mohaq.search.beacons import (
    BeaconConfigError,
    PromisingCriteria,
    select_beacons,
    weight_point_names,
)
from mohaq.search.controller import SearchResult, _resolve_platform, feasible_front, run_search
from mohaq.search.evaluator import PTQEvaluator
from mohaq.search.objectives import ERROR, metric_totals, parse_constraints
from mohaq.search.optimizers import DEFAULT_OPTIMIZER
from mohaq.search.persistence import SETTINGS, EvaluationLog, EvaluationRecord
from mohaq.search.retraining import (
    DEFAULT_RETRAIN_EPOCHS,
    RetrainingRunner,
    RetrainJob,
    RetrainSpec,
    init_arguments,
    retrain_beacon,
)
from mohaq.search.space import SearchSpace

BEACON_SEARCH_DIR = "beacon_search"


@dataclass
class BeaconSearchResult:
    """What the beacon stage produced.

    Attributes:
        run_dir: the inference-only run directory (beacons and report live here).
        search: the beacon-aware search (its run directory is ``run_dir/beacon_search``).
        beacons: every beacon's final state.
        comparison: both fronts, hypervolumes and the matched-cost rows.
        files: name -> path of the outputs.
    """

    run_dir: Path
    search: SearchResult
    beacons: list[Beacon]
    comparison: FrontComparison
    files: dict[str, Path] = field(default_factory=dict)


class _Promising:
    """Feasible on the platform, within the search constraints and the
    promising thresholds."""

    def __init__(self, cost_model: Any, workload: Workload, criteria: PromisingCriteria) -> None:
        self.cost_model, self.workload, self.criteria = cost_model, workload, criteria

    def __call__(self, assignment: BitAssignment, error: float) -> bool:
        if self.cost_model.check(self.workload, assignment):
            return False
        metrics = metric_totals(self.cost_model, self.workload, assignment)
        return self.criteria.holds(error, metrics)


def _float_error(evaluator: Any, inference: Sequence[EvaluationRecord]) -> float:
    try:
        return float(evaluator.float_error())
    except (ArithmeticError, ValueError, AttributeError):
        # Evaluators without a float mode: the 16-bit baseline is the closest.
        uniform = [r for r in inference if r.label == "uniform-16"]
        if not uniform:
            raise
        return uniform[0].error


def _format_rate(rate: float | None) -> str:
    return "unknown" if rate is None else f"{rate:.3g}"


def run_beacon_search(
    *,
    system: Any = None,
    datamodule: Any = None,
    checkpoint_path: str | Path | None = None,
    search_run_dir: str | Path,
    platform: Any,
    objectives: Sequence[str] = (ERROR, "speedup"),
    constraints: Mapping[str, float] | None = None,
    num_beacons: int = 4,
    distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD,
    retrain_epochs: int = DEFAULT_RETRAIN_EPOCHS,
    retrain_lr: float | None = None,
    budget: int = 100,
    devices: int | None = None,
    beacon_ranks: int = 2,
    beacon_separation: float | None = None,
    promising_max_error: float | None = None,
    promising_limits: Mapping[str, float] | None = None,
    max_new_beacons: int = 2,
    max_attempts: int = 2,
    ddp_devices: int = 1,
    accelerator: str = "auto",
    retrain_timeout_s: float | None = None,
    retrain_trainer_kwargs: Mapping[str, Any] | None = None,
    bit_choices: Sequence[int] | None = None,
    optimizer: str = DEFAULT_OPTIMIZER,
    seed: int = 0,
    resume: bool = False,
    batch_size: int = 16,
    logger: Any = None,
    progress: bool = True,
    rescore_test: bool = True,
    platform_overrides: Mapping[str, Any] | None = None,
    workload: Workload | None = None,
    base_evaluator: Any = None,
    beacon_evaluator: Callable[[Path], Any] | None = None,
    retrain_spec: RetrainSpec | None = None,
    retrain_fn: Callable[[RetrainJob], Mapping[str, float]] = retrain_beacon,
    retrain_in_process: bool = False,
) -> BeaconSearchResult:
    """Beacon-based search after an inference-only ``mohaq search`` run.

    Args:
        system: the float AcousticSystem, loaded from ``checkpoint_path``.
        datamodule: the DataModule of the inference-only search.
        checkpoint_path: the float checkpoint (each retraining starts from it).
        search_run_dir: the inference-only run directory.
        platform: cost model, platform name or YAML path (as for ``run_search``).
        objectives, constraints, bit_choices, optimizer, seed, batch_size,
            platform_overrides: as for ``run_search``; use the inference-only run's.
        num_beacons: beacons selected from the inference-only front (default 4).
        distance_threshold: a beacon serves candidates within this L1 distance of
            weight precision levels (default 5; MOHAQ: 5 or 6).
        retrain_epochs: QAT epochs per beacon (default 3; MOHAQ: 20).
        retrain_lr: QAT learning rate; None: a tenth of the float model's.
        budget: evaluations of the beacon-aware search (baselines and seeds included).
        devices: retrainings at once; None: one per GPU, or 1 on CPU.
        beacon_ranks: beacons come from the first ranks of non-dominated sorting.
        beacon_separation: minimum distance between beacons (None: ``distance_threshold``).
        promising_max_error: a beacon is made or used only below this error.
        promising_limits: cost bounds for that, e.g. ``{"min_speedup": 4}``.
        max_new_beacons: beacons the search may add (0: none).
        max_attempts: retraining attempts per beacon.
        ddp_devices: > 1: each beacon trains with DDP over this many devices, as
            its own ``python -m mohaq.search.retraining`` command line.
        accelerator: Trainer accelerator of the retrainings.
        retrain_timeout_s: kill a retraining after this long (recorded as failed).
        retrain_trainer_kwargs: extra Trainer arguments of the retrainings.
        resume: continue an interrupted beacon stage.
        logger: TensorBoard for the beacon-aware search (None: its run_dir/tensorboard).
        progress: progress bar.
        rescore_test: re-score the beacon-based front on the test set.
        workload, base_evaluator, beacon_evaluator, retrain_spec, retrain_fn,
            retrain_in_process: injection points for tests and dry runs.

    Returns:
        The :class:`BeaconSearchResult`.

    Raises:
        BeaconConfigError: invalid beacon settings, no inference-only run, or
            objectives that differ from it.
        SearchConfigError, ObjectiveError, ResumeError: as ``run_search``.
    """
    run_dir = Path(search_run_dir)
    inference = EvaluationLog(run_dir).load()
    if not inference:
        raise BeaconConfigError(
            f"{run_dir} holds no evaluations: run the inference-only search (mohaq search) first"
        )
    settings_path = run_dir / SETTINGS
    if settings_path.exists():
        stored = json.loads(settings_path.read_text())
        if list(stored.get("objectives", objectives)) != list(objectives):
            raise BeaconConfigError(
                f"objectives {list(objectives)} differ from the inference-only run's "
                f"{stored['objectives']}; the fronts could not be compared"
            )
    if num_beacons < 0:
        raise BeaconConfigError(f"num_beacons must be >= 0, got {num_beacons}")
    if workload is None:
        if system is None:
            raise BeaconConfigError("give system (the float AcousticSystem) or workload")
        workload = system.workload()
    cost_model = _resolve_platform(platform, platform_overrides)
    weights = weight_point_names(workload)
    space = SearchSpace(
        workload,
        bit_choices,
        allowed_bits=getattr(cost_model, "allowed_bits", None),
        shared_layer_precision=bool(getattr(cost_model, "shared_layer_precision", False)),
    )
    search_bounds = parse_constraints(constraints, cost_model.metric_names)
    extra = PromisingCriteria.parse(
        max_error=promising_max_error,
        cost_limits=promising_limits,
        metric_names=cost_model.metric_names,
    )
    criteria = PromisingCriteria(search_bounds + extra.constraints)

    # -- beacons: select (once) and retrain -----------------------------------------------
    store = BeaconStore(run_dir)
    if not any(b.origin == "selected" for b in store.beacons()):
        chosen = select_beacons(
            inference,
            weight_points=weights,
            num_beacons=num_beacons,
            max_rank=beacon_ranks,
            min_separation=distance_threshold if beacon_separation is None else beacon_separation,
            promising=extra,
        )
        for record in chosen:
            store.add(
                record.bits,
                genes=record.genes,
                origin="selected",
                source_index=record.index,
                source_error=record.error,
            )
    if retrain_spec is None:
        if system is None or datamodule is None or checkpoint_path is None:
            raise BeaconConfigError(
                "retraining needs system, datamodule and checkpoint_path (or a retrain_spec)"
            )
        retrain_spec = RetrainSpec.from_objects(
            checkpoint_path,
            system,
            datamodule,
            epochs=retrain_epochs,
            learning_rate=retrain_lr,
            accelerator=accelerator,
            trainer_kwargs=dict(retrain_trainer_kwargs or {}),
        )
    runner = RetrainingRunner(
        store,
        retrain_spec,
        processes=devices,
        max_attempts=max_attempts,
        retrain_fn=retrain_fn,
        timeout_s=retrain_timeout_s,
        ddp_devices=ddp_devices,
        in_process=retrain_in_process,
    )
    runner.run()

    # -- the beacon-aware search -------------------------------------------------------
    if base_evaluator is None:
        if system is None or datamodule is None:
            raise BeaconConfigError("the PTQ evaluator needs system and datamodule")
        base_evaluator = PTQEvaluator(system, datamodule, batch_size=batch_size)
    if beacon_evaluator is None:
        if system is None:
            raise BeaconConfigError("give system, or a beacon_evaluator")
        factory = functools.partial(type(system), **init_arguments(system))
        beacon_evaluator = BeaconWeightsPTQ(factory, datamodule, batch_size=batch_size)
    evaluator = BeaconAwareEvaluator(
        base=base_evaluator,
        beacon_evaluator=beacon_evaluator,
        store=store,
        weight_points=weights,
        distance_threshold=distance_threshold,
        is_promising=_Promising(cost_model, workload, criteria),
        known_errors={bits_key(r.bits): r.error for r in inference},
        retrain=runner.run,
        max_new_beacons=max_new_beacons,
        genes_of=space.encode,
    )
    # Continue from where the inference-only search ended: its front first.
    seeds = [BitAssignment.from_dict(r.bits) for r in feasible_front(inference)]
    search = run_search(
        workload=workload,
        platform=cost_model,
        objectives=objectives,
        constraints=constraints,
        bit_choices=bit_choices,
        budget=budget,
        optimizer=optimizer,
        seed=seed,
        run_dir=run_dir / BEACON_SEARCH_DIR,
        resume=resume,
        logger=logger,
        progress=progress,
        rescore_test=rescore_test,
        evaluator=evaluator,
        seed_assignments=seeds,
    )

    # -- report ---------------------------------------------------------------------------
    comparison = compare_fronts(
        inference,
        search.records,
        objectives=search.objectives,
        reference=search.reference,
        float_error=_float_error(evaluator, inference),
    )
    report_settings = {
        "inference-only run": f"`{run_dir}` ({len(inference)} evaluations)",
        "beacon-aware search": f"`{run_dir / BEACON_SEARCH_DIR}` ({len(search.records)} evaluations)",
        "objectives": ", ".join(search.objectives),
        "constraints": ", ".join(c.describe() for c in search_bounds) or "none",
        "promising (beyond the constraints)": ", ".join(extra.describe()) or "none",
        "beacons": f"{num_beacons} selected from the first {beacon_ranks} ranks; "
        f"at most {max_new_beacons} new during the search",
        "distance": f"L1 over weight precision levels (2,4,8,16 bits -> 2,3,4,5); "
        f"threshold {distance_threshold:g}",
        "retraining": f"QAT {retrain_spec.epochs} epochs, learning rate "
        f"{_format_rate(retrain_spec.resolved_learning_rate())}, {max_attempts} attempts at most",
    }
    files = write_beacon_report(
        run_dir, comparison, settings=report_settings, files=dict(search.files)
    )
    return BeaconSearchResult(
        run_dir=run_dir,
        search=search,
        beacons=store.beacons(),
        comparison=comparison,
        files=files,
    )
