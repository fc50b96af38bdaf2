"""MOHAQ step 2, the beacon-based search: :func:`run_beacon_stage`.

1. Read the inference-only run (``<run_dir>/evaluations.jsonl`` and its stored
   settings, both left untouched).
2. Select beacons (:func:`~mohaq.beacons.selection.select_beacons`) and retrain
   them with QAT from the float checkpoint, concurrently, one Lightning run per
   process (:mod:`mohaq.beacons.retraining`), into ``<run_dir>/beacons/<id>/``.
3. Continue the search with the beacon-aware evaluator in
   ``<run_dir>/beacon_search/`` (its own ``evaluations.jsonl``, every record
   naming its evaluator ``"beacon:<id>"`` or ``"ptq"``), seeded with the
   inference-only front. Its problem (platform, objectives, constraints, bit
   choices) is the stored search's; a contradicting value is refused.
4. Report both fronts: ``fronts.png`` and ``beacon_summary.md`` in ``run_dir``.

Restarting with ``resume=True`` reuses finished beacons, retrains interrupted
ones (stopped from outside: they used no attempt), retries failed ones (up to
``max_attempts``) and resumes the beacon-aware search from its log. A beacon
whose retraining keeps failing is recorded and skipped: candidates near it
keep their inference-only error. Every beacon that is not retrained in the end
is listed in :attr:`BeaconSearchResult.failed_beacons`, logged as a warning,
and marked in ``beacon_summary.md``, ``fronts.png`` and the beacon-aware
search's own ``summary.md`` and ``pareto.png``;
:meth:`BeaconSearchResult.raise_for_failures` (``mohaq beacons --strict
true``) turns that into :class:`BeaconsFailedError`.

The stage holds the run directory's lock (:class:`~mohaq.search.lock.RunLock`)
while it runs: a search resumed in the same directory meanwhile is refused.

The knobs are :class:`~mohaq.beacons.settings.BeaconSettings`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mohaq.beacons.evaluator import BeaconAwareEvaluator, BeaconWeightsPTQ, bits_key
from mohaq.beacons.report import (
    FrontComparison,
    beacon_problems,
    compare_fronts,
    write_beacon_report,
)
from mohaq.beacons.retraining import RetrainingRunner, RetrainJob, RetrainSpec, retrain_beacon
from mohaq.beacons.selection import (
    BeaconConfigError,
    PromisingCriteria,
    select_beacons,
    weight_point_names,
)
from mohaq.beacons.settings import BeaconSettings
from mohaq.beacons.store import DONE, Beacon, BeaconStore
from mohaq.hardware.base import CostModel
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload
from mohaq.search.callbacks import SearchCallback, SearchInfo
from mohaq.search.evaluators import Evaluator, PTQEvaluator, init_arguments
from mohaq.search.executors import InProcess
from mohaq.search.lock import RunLock
from mohaq.search.objectives import metric_totals, parse_constraints
from mohaq.search.plots import PlotContext
from mohaq.search.records import (
    EVALUATIONS,
    DamagedLogError,
    EvaluationLog,
    EvaluationRecord,
    ResumeError,
    StoredRun,
)
from mohaq.search.report import front_of
from mohaq.search.run import (
    SearchResult,
    check_ptq_platform,
    default_callbacks,
    resolve_cost_model,
    run_search,
)
from mohaq.search.settings import SearchSettings, continue_settings
from mohaq.search.space import SearchSpace
from mohaq.search.tensorboard import TensorBoardCallback, log_images

BEACON_SEARCH_DIR = "beacon_search"

log = logging.getLogger(__name__)


class BeaconsFailedError(RuntimeError):
    """Beacons that were not retrained (failed or interrupted), when that is an error.

    Attributes:
        beacons: the beacons that are not done.
    """

    def __init__(self, message: str, beacons: Sequence[Beacon]) -> None:
        super().__init__(message)
        self.beacons = list(beacons)


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

    @property
    def failed_beacons(self) -> list[Beacon]:
        """Beacons not retrained in the end (failed for good, or interrupted)."""
        return [b for b in self.beacons if b.status != DONE]

    def raise_for_failures(self) -> None:
        """Raises :class:`BeaconsFailedError` if any beacon was not retrained."""
        failed = self.failed_beacons
        if failed:
            lines = "; ".join(beacon_problems(failed))
            raise BeaconsFailedError(
                f"{len(failed)} of {len(self.beacons)} beacons were not retrained: {lines}. "
                f"The report in {self.run_dir} is complete without them (nearby candidates kept "
                "their inference-only error); resume the stage (--resume true) to retrain "
                "interrupted ones",
                failed,
            )


class _ResumedDecisions(SearchCallback):
    """On resume, tells the evaluator which beacon scored each logged record."""

    def __init__(self, evaluator: BeaconAwareEvaluator) -> None:
        self.evaluator = evaluator

    def on_search_start(self, info: SearchInfo) -> None:
        for record in info.resumed:
            self.evaluator.remember(record)


class _BeaconFacts(SearchCallback):
    """Puts the beacons that were not retrained and the float model's error
    into the beacon-aware search's result, so its summary and Pareto plot show
    them (it runs before the reporters)."""

    def __init__(self, store: BeaconStore, float_error: Callable[[], float]) -> None:
        self.store = store
        self.float_error = float_error

    def on_search_end(self, result: SearchResult) -> None:
        failed = [b for b in self.store.beacons() if b.status != DONE]
        result.warnings.extend(f"beacon {line}" for line in beacon_problems(failed))
        if result.float_error is None:
            result.float_error = self.float_error()


@dataclass
class BeaconParts:
    """Parts of the stage given instead of built from the model (tests, dry runs).

    Attributes:
        workload: the quantization points (default: the model's).
        cost_model: a built cost model (default: the stored search's platform).
        base_evaluator: the inference-only evaluator (default: PTQ on the float model).
        beacon_evaluator: weights path -> evaluator on those weights (default:
            PTQ on the model rebuilt with the beacon's weights).
        retrain_spec: how retraining processes rebuild model and data (default:
            from the model, the DataModule and the checkpoint).
        retrain_fn: ``job -> metrics`` run in each retraining process.
    """

    workload: Workload | None = None
    cost_model: CostModel | None = None
    base_evaluator: Evaluator | None = None
    beacon_evaluator: Callable[[Path], Evaluator] | None = None
    retrain_spec: RetrainSpec | None = None
    retrain_fn: Callable[[RetrainJob], Mapping[str, float]] = retrain_beacon


class _Promising:
    """Feasible on the platform, within the search constraints and the
    promising thresholds."""

    def __init__(self, cost_model: CostModel, workload: Workload, criteria: PromisingCriteria):
        self.cost_model, self.workload, self.criteria = cost_model, workload, criteria

    def __call__(self, assignment: BitAssignment, error: float) -> bool:
        if self.cost_model.check(self.workload, assignment):
            return False
        metrics = metric_totals(self.cost_model, self.workload, assignment)
        return self.criteria.holds(error, metrics)


def _float_error(evaluator: BeaconAwareEvaluator, inference: Sequence[EvaluationRecord]) -> float:
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


def beacon_search_settings(
    run_dir: str | Path, overrides: Mapping[str, Any] | None = None
) -> tuple[StoredRun, SearchSettings]:
    """The stored inference-only search and the settings of its continuation.

    ``overrides`` may change how the continued search runs (budget,
    algorithm, seed, batch size); the problem must stay the stored one. The
    continuation runs in ``<run_dir>/beacon_search`` with one in-process
    evaluator (the retrainings are what runs in parallel).

    Raises:
        BeaconConfigError: no inference-only search in ``run_dir``, or workers > 1.
        SearchConfigError: an override that contradicts the stored problem
            (names both values).
    """
    run_dir = Path(run_dir)
    try:
        stored = StoredRun.read(run_dir)
    except ResumeError as error:
        raise BeaconConfigError(
            f"{run_dir} holds no inference-only search to continue: run `mohaq search` with "
            f"this run_dir first ({error})"
        ) from error
    given = {k: v for k, v in dict(overrides or {}).items() if v is not None and k != "run_dir"}
    workers = given.pop("workers", 1)
    given.pop("executor", None)
    if workers != 1:
        raise BeaconConfigError(
            f"workers={workers}: the beacon-aware search evaluates in the search process; "
            "beacons are retrained in parallel (devices)"
        )
    settings = continue_settings(SearchSettings.from_dict(stored.settings), given)
    continued = settings.replace(
        run_dir=str(run_dir / BEACON_SEARCH_DIR), workers=1, executor=InProcess()
    )
    return stored, continued


def run_beacon_stage(
    run_dir: str | Path,
    beacon: BeaconSettings,
    *,
    search_overrides: Mapping[str, Any] | None = None,
    system: Any = None,
    datamodule: Any = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    parts: BeaconParts | None = None,
    callbacks: Sequence[SearchCallback] | None = None,
    truncate_damaged: bool = False,
) -> BeaconSearchResult:
    """Beacon-based search after an inference-only search in ``run_dir``.

    Args:
        run_dir: the inference-only search's run directory.
        beacon: the beacon knobs.
        search_overrides: search settings for the continued search (budget,
            algorithm, seed, batch_size, ...); problem settings must match the
            stored search's.
        system: the float LightningModule, loaded from the checkpoint.
        datamodule: the DataModule of the inference-only search.
        checkpoint: the float checkpoint (default: the one the search scored;
            another one is refused).
        resume: continue an interrupted beacon stage.
        parts: parts given instead of built from the model.
        callbacks: what sees the continued search (None: progress, TensorBoard, reports).
        truncate_damaged: on resume, move a damaged part of the beacon-aware
            search's log aside and evaluate it again (see
            :meth:`~mohaq.search.records.EvaluationLog.load`).

    Returns:
        The :class:`BeaconSearchResult`.

    Raises:
        BeaconConfigError: invalid beacon settings, no inference-only run, or a
            checkpoint other than the search's.
        SearchConfigError: a problem setting that contradicts the stored search.
        ObjectiveError, ResumeError: as :func:`~mohaq.search.run.run_search`;
            RunDirectoryInUseError when another process runs in ``run_dir``,
            DamagedLogError for a damaged log.
    """
    run_dir = Path(run_dir)
    with RunLock(run_dir, "mohaq beacons"):
        return _run_stage(
            run_dir, beacon, search_overrides=search_overrides, system=system,
            datamodule=datamodule, checkpoint=checkpoint, resume=resume, parts=parts,
            callbacks=callbacks, truncate_damaged=truncate_damaged,
        )  # fmt: skip


def _inference_log(run_dir: Path) -> list[EvaluationRecord]:
    """The inference-only search's records; its damage is repaired by that search."""
    try:
        return EvaluationLog(run_dir).load()
    except DamagedLogError as error:
        raise DamagedLogError(
            f"the inference-only search's log {error.path} is damaged at line {error.line}; the "
            "beacon stage only reads it. Repair it by resuming that search with "
            f"`mohaq search --run_dir {run_dir} --resume true --truncate_damaged true` (the "
            "damaged part is evaluated again), then run the beacon stage. Detail: "
            f"{error}",
            path=error.path,
            line=error.line,
            offset=error.offset,
            intact=error.intact,
        ) from error


def _refuse_fresh_start(run_dir: Path, store: BeaconStore) -> None:
    beacons = store.beacons()
    log_path = run_dir / BEACON_SEARCH_DIR / EVALUATIONS
    if beacons or (log_path.exists() and log_path.stat().st_size > 0):
        raise ResumeError(
            f"{run_dir} already holds a beacon stage ({len(beacons)} beacons in "
            f"{store.root}); resume it (--resume true), or delete {store.root} and "
            f"{run_dir / BEACON_SEARCH_DIR} to start it over"
        )


def _run_stage(
    run_dir: Path,
    beacon: BeaconSettings,
    *,
    search_overrides: Mapping[str, Any] | None,
    system: Any,
    datamodule: Any,
    checkpoint: str | Path | None,
    resume: bool,
    parts: BeaconParts | None,
    callbacks: Sequence[SearchCallback] | None,
    truncate_damaged: bool,
) -> BeaconSearchResult:
    inference = _inference_log(run_dir)
    if not inference:
        raise BeaconConfigError(
            f"{run_dir} holds no evaluations: run the inference-only search (mohaq search) first"
        )
    stored, settings = beacon_search_settings(run_dir, search_overrides)
    if checkpoint is not None and stored.checkpoint is not None:
        if Path(checkpoint).resolve() != Path(stored.checkpoint).resolve():
            raise BeaconConfigError(
                f"checkpoint {str(checkpoint)!r} is not the one the search in {run_dir} scored "
                f"({stored.checkpoint!r}); beacons must be retrained from that checkpoint"
            )
    checkpoint = checkpoint if checkpoint is not None else stored.checkpoint
    parts = parts or BeaconParts()
    workload = parts.workload
    if workload is None:
        if system is None:
            raise BeaconConfigError("give system (the float model) or parts.workload")
        workload = system.workload()
    cost_model = resolve_cost_model(settings, parts.cost_model)
    check_ptq_platform(settings, cost_model)  # before any retraining
    weights = weight_point_names(workload)
    space = SearchSpace(
        workload,
        settings.bit_choices,
        allowed_bits=cost_model.allowed_bits,
        shared_layer_precision=cost_model.shared_layer_precision,
    )
    search_bounds = parse_constraints(settings.constraints, cost_model.metric_names)
    extra = PromisingCriteria.parse(
        max_error=beacon.promising_max_error,
        cost_limits=beacon.promising_limits,
        metric_names=cost_model.metric_names,
    )
    criteria = PromisingCriteria(search_bounds + extra.constraints)

    # -- beacons: select (once) and retrain -----------------------------------------------
    store = BeaconStore(run_dir)
    if not resume:
        _refuse_fresh_start(run_dir, store)
    if not any(b.origin == "selected" for b in store.beacons()):
        chosen = select_beacons(
            inference,
            weight_points=weights,
            num_beacons=beacon.num_beacons,
            max_rank=beacon.beacon_ranks,
            min_separation=beacon.separation,
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
    retrain_spec = parts.retrain_spec
    if retrain_spec is None:
        if system is None or datamodule is None or checkpoint is None:
            raise BeaconConfigError(
                "retraining needs system, datamodule and checkpoint (or parts.retrain_spec)"
            )
        retrain_spec = RetrainSpec.from_objects(
            checkpoint,
            system,
            datamodule,
            epochs=beacon.retrain_epochs,
            learning_rate=beacon.retrain_lr,
            accelerator=beacon.accelerator,
            trainer_kwargs=dict(beacon.retrain_trainer_kwargs),
            max_loss_ratio=beacon.retrain_max_loss_ratio,
        )
    runner = RetrainingRunner(
        store,
        retrain_spec,
        processes=beacon.devices,
        max_attempts=beacon.max_attempts,
        retrain_fn=parts.retrain_fn,
        timeout_s=beacon.retrain_timeout_s,
        ddp_devices=beacon.ddp_devices,
        in_process=beacon.retrain_in_process,
        points=workload.names,
    )
    runner.run()

    # -- the beacon-aware search -------------------------------------------------------
    # The same post-training quantization as the search it continues.
    ptq = settings.ptq_options()
    base_evaluator = parts.base_evaluator
    if base_evaluator is None:
        if system is None or datamodule is None:
            raise BeaconConfigError("the PTQ evaluator needs system and datamodule")
        base_evaluator = PTQEvaluator(system, datamodule, batch_size=settings.batch_size, ptq=ptq)
    beacon_evaluator = parts.beacon_evaluator
    if beacon_evaluator is None:
        if system is None:
            raise BeaconConfigError("give system, or parts.beacon_evaluator")
        factory = functools.partial(type(system), **init_arguments(system))
        beacon_evaluator = BeaconWeightsPTQ(
            factory, datamodule, batch_size=settings.batch_size, ptq=ptq
        )
    evaluator = BeaconAwareEvaluator(
        base=base_evaluator,
        beacon_evaluator=beacon_evaluator,
        store=store,
        weight_points=weights,
        distance_threshold=beacon.distance_threshold,
        is_promising=_Promising(cost_model, workload, criteria),
        known_errors={bits_key(r.bits): r.error for r in inference},
        retrain=runner.run,
        max_new_beacons=beacon.max_new_beacons,
        genes_of=space.encode,
        method=ptq.tag(),
    )
    # Continue from where the inference-only search ended: its front first.
    front = sorted(front_of(inference), key=lambda r: (r.error, r.index))
    used = default_callbacks() if callbacks is None else list(callbacks)
    search = run_search(
        settings,
        workload=workload,
        evaluator=evaluator,
        cost_model=cost_model,
        resume=resume,
        callbacks=[
            _ResumedDecisions(evaluator),
            # before the reporters: they show its warnings and float error
            _BeaconFacts(store, functools.partial(_float_error, evaluator, inference)),
            *used,
        ],
        seeds=[BitAssignment.from_dict(r.bits) for r in front],
        checkpoint=None if checkpoint is None else str(checkpoint),
        truncate_damaged=truncate_damaged,
    )

    # -- report ---------------------------------------------------------------------------
    float_error = search.float_error
    comparison = compare_fronts(
        inference,
        search.records,
        objectives=search.objectives,
        reference=search.reference,
        float_error=_float_error(evaluator, inference) if float_error is None else float_error,
    )
    report_settings = {
        "inference-only run": f"`{run_dir}` ({len(inference)} evaluations)",
        "beacon-aware search": f"`{run_dir / BEACON_SEARCH_DIR}` ({len(search.records)} evaluations)",
        "objectives": ", ".join(search.objectives),
        "constraints": ", ".join(c.describe() for c in search_bounds) or "none",
        "promising (beyond the constraints)": ", ".join(extra.describe()) or "none",
        "beacons": f"{beacon.num_beacons} selected from the first {beacon.beacon_ranks} ranks; "
        f"at most {beacon.max_new_beacons} new during the search",
        "distance": f"L1 over weight precision levels (2,4,8,16 bits -> 2,3,4,5); "
        f"threshold {beacon.distance_threshold:g}",
        "retraining": f"QAT {retrain_spec.epochs} epochs, learning rate "
        f"{_format_rate(retrain_spec.resolved_learning_rate())}, "
        f"{beacon.max_attempts} attempts at most",
    }
    context = PlotContext.from_problem(
        search.info.problem, cost_model=cost_model, float_error=comparison.float_error
    )
    files = write_beacon_report(
        run_dir,
        comparison,
        settings=report_settings,
        files=dict(search.files),
        records=[*inference, *search.records],
        points=workload.names,
        context=context,
    )
    for callback in used:  # the fronts beside the search's own plots in TensorBoard
        if isinstance(callback, TensorBoardCallback) and callback.log_dir is not None:
            log_images(callback.log_dir, {"plots/fronts": files["fronts_png"]}, len(search.records))
    beacons = store.beacons()
    for line in beacon_problems([b for b in beacons if b.status != DONE]):
        log.warning("beacon %s", line)
    return BeaconSearchResult(
        run_dir=run_dir,
        search=search,
        beacons=beacons,
        comparison=comparison,
        files=files,
    )
