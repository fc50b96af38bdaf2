"""Running a search: :func:`run_search` (any evaluator) and
:func:`search_model` (post-training quantization of a trained model, what
``mohaq search`` runs).

Everything that can be validated is validated before the first evaluation
(settings, platform, objectives, constraints, bit choices, budget, algorithm,
executor, run directory). Then the uniform baselines are evaluated, the
algorithm proposes candidates until the budget is spent, the final front is
re-scored on the test set, and the callbacks write the reports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mohaq.hardware.base import CostModel
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload
from mohaq.quant.ptq import PTQConfig, PTQConfigError
from mohaq.search.callbacks import CallbackList, SearchCallback, SearchInfo
from mohaq.search.evaluators import (
    OPTIMIZATION,
    TEST,
    EvaluationResult,
    Evaluator,
    PTQEvaluator,
    PTQEvaluatorSpec,
    Racing,
)
from mohaq.search.executors import EvaluationExecutor, EvaluatorFactory, InProcess, open_executor
from mohaq.search.lock import RunLock
from mohaq.search.loop import CHECKPOINT_INTERVAL_S, SearchLoop
from mohaq.search.pareto import hypervolume
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers import ProposerContext, build_proposer
from mohaq.search.records import (
    TEST_ERRORS,
    EvaluationLog,
    EvaluationRecord,
    ProposerCheckpoint,
    ResumeError,
    StoredRun,
    storage_error,
    store_run,
    write_json_atomic,
)
from mohaq.search.settings import RESUMABLE_FIELDS, SearchConfigError, SearchSettings

logger = logging.getLogger(__name__)

#: The float model's error, scored once per run directory (``score_float``),
#: with the errors of the role-uniform rows (:data:`ROLE_ROWS`).
FLOAT_ERROR = "float_error.json"
#: Rows with every weight at one precision and every activation at another
#: (label -> (weight bits, activation bits)): where 4-bit weights alone, or
#: 4-bit activations alone, lose accuracy. Scored with the float model and
#: shown beside the uniform baselines; never in the log, the budget or the front.
ROLE_ROWS: dict[str, tuple[int, int]] = {"W4A8": (4, 8), "W8A4": (8, 4)}


@dataclass
class SearchResult:
    """What a search produced.

    Attributes:
        info: the search as its callbacks saw it (settings, problem, run dir).
        records: every evaluation, in log order.
        front: the feasible Pareto front, sorted by error.
        test_errors: evaluation index -> test-set error of each front solution.
        hypervolume: hypervolume of the front against ``info.reference``.
        stopped_early: why the search stopped before the budget, or None.
        float_error: the float model's error on the optimization set (plots and
            summaries draw it), or None when the search was not asked to score it.
        role_rows: the :data:`ROLE_ROWS` the space can express, scored with the
            float model (records with negative indices, origin ``"reference"``).
        files: name -> path of the outputs callbacks wrote.
        warnings: what a reader of the report must know (callbacks may add to it
            in ``on_search_end``; the summary and the plot show them).
    """

    info: SearchInfo
    records: list[EvaluationRecord]
    front: list[EvaluationRecord]
    test_errors: dict[int, float]
    hypervolume: float
    stopped_early: str | None = None
    float_error: float | None = None
    role_rows: list[EvaluationRecord] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.info.run_dir

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.info.objectives

    @property
    def reference(self) -> list[float]:
        return list(self.info.reference)

    @property
    def algorithm(self) -> str:
        return self.info.algorithm

    @property
    def baselines(self) -> list[EvaluationRecord]:
        return [r for r in self.records if r.origin == "baseline"]


def resolve_cost_model(settings: SearchSettings, cost_model: CostModel | None = None) -> CostModel:
    """The settings' platform (name or YAML, with overrides), or ``cost_model`` as given.

    Raises:
        SearchConfigError: overrides given together with a built cost model.
        PlatformError: an unknown platform or constant.
    """
    if cost_model is not None:
        if settings.platform_overrides:
            raise SearchConfigError(
                "platform_overrides apply to a platform given by name or file, not to a built cost model"
            )
        return cost_model
    from mohaq.hardware import load_platform

    return load_platform(settings.platform, **settings.platform_overrides)


def check_ptq_platform(settings: SearchSettings, cost_model: CostModel) -> None:
    """Refuses post-training quantization grids the platform cannot run
    (per-channel weight scales, activation zero points), before long work starts.

    Raises:
        SearchConfigError: naming the platform, the grid and how to fix it.
    """
    try:
        settings.ptq_options().check_platform(
            per_channel_weights=cost_model.per_channel_weights,
            asymmetric_activations=cost_model.asymmetric_activations,
            platform=cost_model.name,
        )
    except PTQConfigError as error:
        raise SearchConfigError(f"ptq {settings.ptq!r}: {error}") from error


def default_callbacks(*, progress: bool = True, tensorboard: Any = None) -> list[SearchCallback]:
    """Progress bar, the report files and TensorBoard.

    Args:
        progress: show a progress bar.
        tensorboard: a SummaryWriter (or Lightning logger) to log to; None:
            ``<run_dir>/tensorboard``; False: no TensorBoard.
    """
    from mohaq.search.progress import ProgressBar
    from mohaq.search.report import ReportWriter
    from mohaq.search.tensorboard import TensorBoardCallback

    callbacks: list[SearchCallback] = []
    if progress:
        callbacks.append(ProgressBar())
    callbacks.append(ReportWriter())  # before TensorBoard, which logs the plots it wrote
    if tensorboard is not False:
        callbacks.append(TensorBoardCallback(tensorboard))
    return callbacks


def _stored_test_errors(path: Path) -> dict[int, float]:
    """The cached test errors; a damaged cache is scored again (with a warning)."""
    if not path.exists():
        return {}
    try:
        return {int(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as error:
        logger.warning("%s is damaged (%s): the front is scored on the test set again", path, error)
        return {}


def _test_errors(
    run_dir: Path, front: Sequence[EvaluationRecord], executor: EvaluationExecutor
) -> dict[int, float]:
    """Test-set error of each front solution, cached in ``test_errors.json``."""
    path = run_dir / TEST_ERRORS
    stored = _stored_test_errors(path)
    wanted = [r for r in front if r.index not in stored]
    if wanted:
        futures = {r.index: executor.submit(r.bits, TEST) for r in wanted}
        for index, future in futures.items():
            stored[index] = float(future.result()[0].error)
        try:
            write_json_atomic(path, {str(k): v for k, v in sorted(stored.items())})
        except OSError as error:
            raise storage_error(
                "write", path, error, "the evaluation log is safe: resume (--resume true)"
            ) from error
    return {r.index: stored[r.index] for r in front}


def _read_float_errors(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
        return {str(k): float(v) for k, v in stored.items()}
    except (ValueError, TypeError, AttributeError) as error:
        logger.warning("%s is damaged (%s): the float model is scored again", path, error)
        return {}


def _role_assignment(problem: SearchProblem, weight_bits: int, activation_bits: int) -> Any:
    """Genes of every weight at ``weight_bits`` and every other point at
    ``activation_bits``, or None where the space cannot hold it."""
    choices = problem.space.choices
    if problem.space.shared_layer_precision or not {weight_bits, activation_bits} <= set(choices):
        return None
    bits = {
        p.name: weight_bits if p.kind == "weight" else activation_bits
        for p in problem.workload.points
    }
    return problem.space.encode(BitAssignment(bits))


def _float_error(
    run_dir: Path, executor: EvaluationExecutor, problem: SearchProblem
) -> tuple[float, list[EvaluationRecord]]:
    """The float model's error (the empty assignment) and the :data:`ROLE_ROWS`,
    cached in ``float_error.json``."""
    path = run_dir / FLOAT_ERROR
    stored = _read_float_errors(path)
    wanted: dict[str, Any] = {"optimization": {}}
    for label, (w, a) in ROLE_ROWS.items():
        genes = _role_assignment(problem, w, a)
        if genes is not None:
            wanted[label] = genes
    missing = [label for label in wanted if label not in stored]
    if missing:
        futures = {
            label: executor.submit(
                {} if label == "optimization" else problem.assignment(wanted[label]).to_dict(),
                OPTIMIZATION,
            )
            for label in missing
        }
        for label, future in futures.items():
            stored[label] = float(future.result()[0].error)
        try:
            write_json_atomic(path, stored)
        except OSError as failure:
            raise storage_error(
                "write", path, failure, "the evaluation log is safe: resume (--resume true)"
            ) from failure
    rows = [
        problem.record(
            -number,
            genes,
            EvaluationResult(stored[label]),
            seconds=0.0,
            origin="reference",
            label=label,
        )  # fmt: skip
        for number, (label, genes) in enumerate(wanted.items())
        if label != "optimization"
    ]
    return stored["optimization"], rows


def run_search(
    settings: SearchSettings,
    *,
    workload: Workload,
    evaluator: Evaluator | None = None,
    evaluator_factory: EvaluatorFactory | None = None,
    cost_model: CostModel | None = None,
    resume: bool = False,
    callbacks: Sequence[SearchCallback] | None = None,
    seeds: Sequence[BitAssignment] = (),
    checkpoint: str | None = None,
    truncate_damaged: bool = False,
    score_float: bool = False,
) -> SearchResult:
    """Searches per-point precisions for the Pareto front of error and hardware cost.

    Args:
        settings: every knob of the search.
        workload: the model's quantization points.
        evaluator: scores candidates in this process (the inline executor).
        evaluator_factory: a picklable callable building an evaluator; needed
            by process and submitit executors (built once per worker process).
        cost_model: a built cost model instead of ``settings.platform``.
        resume: continue the run in ``settings.run_dir``.
        callbacks: what sees the search (None: :func:`default_callbacks`).
        seeds: assignments evaluated right after the baselines and told to the
            algorithm (a previous stage's front, for a continued search).
        checkpoint: the float checkpoint the evaluator scores (stored with the run).
        truncate_damaged: on resume, move a damaged part of the evaluation log
            aside and evaluate it again, instead of stopping with DamagedLogError.
        score_float: also score the float model (the empty assignment) once, for
            the reports (evaluators that quantize a float model, such as PTQ).

    Returns:
        The :class:`SearchResult`.

    Raises:
        SearchConfigError, ObjectiveError, SearchSpaceError, AlgorithmError,
        ExecutorError: invalid settings, before any evaluation.
        ResumeError: a run directory that does not match; subclasses:
            RunDirectoryInUseError (another process runs in it), DamagedLogError
            (a damaged evaluation log), RunStorageError (a failed write).
    """
    if (evaluator is None) == (evaluator_factory is None):
        raise SearchConfigError("give exactly one of evaluator and evaluator_factory")
    if evaluator is not None and not isinstance(settings.executor_options, InProcess):
        raise SearchConfigError(
            f"workers={settings.workers}: an evaluator built in this process cannot be shared "
            "with worker processes; give a picklable evaluator_factory (or a checkpoint and a "
            "DataModule through search_model)"
        )
    cost_model = resolve_cost_model(settings, cost_model)
    check_ptq_platform(settings, cost_model)
    problem = SearchProblem(
        # Memory and storage costs count the scales and zero-point corrections
        # that the PTQ grids store beside the weights.
        workload=settings.ptq_options().workload_with_overheads(workload),
        cost_model=cost_model,
        objectives=settings.objectives,
        constraints=settings.constraints,
        bit_choices=settings.bit_choices,
    )
    if settings.budget < len(problem.baseline_bits):
        names = ", ".join(f"{b}-bit" for b in problem.baseline_bits)
        raise SearchConfigError(
            f"budget {settings.budget} is below the {len(problem.baseline_bits)} uniform baselines "
            f"({names}); use budget >= {len(problem.baseline_bits)}"
        )
    seed_genes = [problem.space.encode(a) for a in seeds]
    run_dir = Path(settings.run_dir)
    stored = StoredRun(
        settings=settings.to_dict(),
        problem=problem.describe(),
        checkpoint=None if checkpoint is None else str(checkpoint),
        seeds=[list(g) for g in seed_genes],
    )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResumeError(f"cannot create the run directory {run_dir}: {error}") from error
    # Held until the search ends: a second process on this directory would
    # interleave its records with ours.
    with RunLock(run_dir, "mohaq search"):
        return _run_locked(
            settings, stored, problem, seed_genes, evaluator, evaluator_factory, resume,
            truncate_damaged, callbacks, score_float,
        )  # fmt: skip


def _run_locked(
    settings: SearchSettings,
    stored: StoredRun,
    problem: SearchProblem,
    seed_genes: list[Any],
    evaluator: Evaluator | None,
    evaluator_factory: EvaluatorFactory | None,
    resume: bool,
    truncate_damaged: bool,
    callbacks: Sequence[SearchCallback] | None,
    score_float: bool = False,
) -> SearchResult:
    run_dir = Path(settings.run_dir)
    store_run(run_dir, stored, resume=resume, resumable=RESUMABLE_FIELDS)
    proposer_checkpoint = ProposerCheckpoint(run_dir)
    if not resume:
        proposer_checkpoint.path.unlink(missing_ok=True)
    log = EvaluationLog(run_dir)
    logged = log.load(truncate_damaged=truncate_damaged) if resume else []
    if [r.index for r in logged] != list(range(len(logged))):
        raise ResumeError(f"{log.path} does not hold evaluations 0, 1, 2, ... in order")
    proposer = build_proposer(
        settings.algorithm_options,
        ProposerContext(
            problem=problem, budget=settings.budget, workers=settings.workers, seed=settings.seed
        ),
    )
    info = SearchInfo(
        settings=settings,
        algorithm=settings.algorithm_name,
        problem=problem.describe(),
        run_dir=run_dir,
        resumed=tuple(logged),
    )
    hooks = CallbackList(
        [
            *(default_callbacks() if callbacks is None else callbacks),
            *settings.algorithm_options.callbacks(),
        ]
    )
    executor = open_executor(
        settings.executor_options,
        workers=settings.workers,
        run_dir=run_dir,
        evaluator=evaluator,
        factory=evaluator_factory,
    )
    try:
        with log:
            hooks.on_search_start(info)
            loop = SearchLoop(
                racing=settings.racing,
                problem=problem,
                proposer=proposer,
                algorithm=settings.algorithm_name,
                executor=executor,
                log=log,
                checkpoint=proposer_checkpoint,
                callbacks=hooks,
                budget=settings.budget,
                workers=settings.workers,
                seeds=seed_genes,
                checkpoint_interval_s=CHECKPOINT_INTERVAL_S,
            )
            outcome = loop.run(logged)
        test_errors = (
            _test_errors(run_dir, outcome.front, executor) if settings.rescore_test else {}
        )
        float_error, role_rows = (
            _float_error(run_dir, executor, problem) if score_float else (None, [])
        )
        result = SearchResult(
            info=info,
            records=outcome.records,
            front=outcome.front,
            test_errors=test_errors,
            hypervolume=hypervolume([r.losses for r in outcome.front], problem.reference),
            stopped_early=outcome.stopped_early,
            float_error=float_error,
            role_rows=role_rows,
        )
        hooks.on_search_end(result)
        return result
    finally:
        hooks.teardown()
        executor.shutdown()


def search_model(
    settings: SearchSettings,
    *,
    system: Any,
    datamodule: Any,
    checkpoint: str,
    resume: bool = False,
    callbacks: Sequence[SearchCallback] | None = None,
    truncate_damaged: bool = False,
) -> SearchResult:
    """MOHAQ's inference-only stage: post-training quantization of a trained model.

    Args:
        settings: the search settings.
        system: the float LightningModule, loaded from ``checkpoint``.
        datamodule: its DataModule (optimization set and test set).
        checkpoint: the float checkpoint (worker processes load it themselves).
        resume: continue the run in ``settings.run_dir``.
        callbacks: what sees the search (None: :func:`default_callbacks`).
        truncate_damaged: see :func:`run_search`.
    """
    factory: EvaluatorFactory
    if isinstance(settings.executor_options, InProcess):
        # Built after the settings are validated: calibration takes a while.
        factory = _InProcessPTQ(
            system,
            datamodule,
            settings.batch_size,
            settings.racing_options(),
            settings.ptq_options(),
        )
    else:
        factory = PTQEvaluatorSpec.from_objects(
            checkpoint,
            datamodule,
            system,
            batch_size=settings.batch_size,
            racing=settings.racing_options(),
            ptq=settings.ptq_options(),
        )
    return run_search(
        settings,
        workload=system.workload(),
        evaluator_factory=factory,
        resume=resume,
        callbacks=callbacks,
        checkpoint=checkpoint,
        truncate_damaged=truncate_damaged,
        score_float=True,
    )


@dataclass(frozen=True)
class _InProcessPTQ:
    """Builds the PTQ evaluator on the search's own model and data."""

    system: Any
    datamodule: Any
    batch_size: int
    racing: Racing | None = None
    ptq: PTQConfig | None = None

    def __call__(self) -> PTQEvaluator:
        return PTQEvaluator(
            self.system,
            self.datamodule,
            batch_size=self.batch_size,
            racing=self.racing,
            ptq=self.ptq,
        )
