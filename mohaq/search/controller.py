"""The search controller of ``mohaq search`` (inference-only stage).

:func:`run_search` validates everything that can be validated before long
work (objectives, constraints, bit choices, budget, optimizer, workers),
evaluates the uniform-precision baselines, then lets an optimizer propose
bit assignments until ``budget`` distinct candidates have been evaluated.

Guarantees:

* a candidate is never evaluated twice (cache keyed by its genes);
* candidates that break a cheap constraint (platform violations, bounds on
  cost metrics) are never evaluated, and infeasible candidates never enter
  the reported front (the controller keeps its own archive);
* every evaluation is appended to ``evaluations.jsonl`` as it finishes;
* sequential runs (``workers=1``) are deterministic for a seed, and
  ``resume=True`` replays the optimizer from its seed, answering from the log,
  so a resumed run ends exactly where an uninterrupted one would;
  parallel runs restore the last optimizer checkpoint and tell it the
  evaluations logged since (results then depend on completion order).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload
from mohaq.search import persistence
from mohaq.search.evaluator import (
    OPTIMIZATION,
    TEST,
    EvaluatorInstance,
    PTQEvaluator,
    PTQEvaluatorSpec,
)
from mohaq.search.objectives import (
    ERROR,
    CheapFeasibility,
    Constraint,
    ObjectiveSet,
    check_achievable,
    metric_totals,
    parse_constraints,
    reference_point,
)
from mohaq.search.optimizers import (
    DEFAULT_OPTIMIZER,
    NSGA2,
    NSGA2_NAME,
    NevergradProposer,
    atomic_write_bytes,
    validate_optimizer_name,
)
from mohaq.search.pareto import hypervolume, pareto_indices
from mohaq.search.persistence import EvaluationLog, EvaluationRecord, ResumeError
from mohaq.search.space import SearchSpace

BASELINE_BITS: tuple[int, ...] = (16, 8, 4, 2)


class SearchConfigError(ValueError):
    """A search setting that is invalid before any evaluation starts."""


@dataclass
class SearchResult:
    """What a search produced.

    Attributes:
        run_dir: the run directory.
        records: every evaluation, in log order.
        front: the feasible Pareto front (records), sorted by error.
        test_errors: evaluation index -> test-set error of each front solution.
        baselines: the uniform-precision evaluations.
        reference: the fixed hypervolume reference point (in losses).
        hypervolume: hypervolume of the front against ``reference``.
        objectives: objective names.
        optimizer: optimizer name.
        files: name -> path of the outputs (pareto_csv, pareto_png, summary, ...).
        stopped_early: why the search stopped before the budget, or None.
    """

    run_dir: Path
    records: list[EvaluationRecord]
    front: list[EvaluationRecord]
    test_errors: dict[int, float]
    baselines: list[EvaluationRecord]
    reference: list[float]
    hypervolume: float
    objectives: tuple[str, ...]
    optimizer: str
    files: dict[str, Path] = field(default_factory=dict)
    stopped_early: str | None = None


def feasible_front(records: Sequence[EvaluationRecord]) -> list[EvaluationRecord]:
    """Feasible, non-dominated records (by their losses), sorted by error."""
    feasible = [r for r in records if r.feasible]
    front = [feasible[i] for i in pareto_indices([r.losses for r in feasible])]
    return sorted(front, key=lambda r: (r.error, r.index))


class _Inline:
    """A completed-future stand-in for sequential evaluation."""

    def __init__(self, value: tuple[float, float]) -> None:
        self._value = value

    def result(self) -> tuple[float, float]:
        return self._value


class SearchController:
    """Owns the optimizer, constraints, cache, persistence, resume, workers and reporting.

    Most users call :func:`run_search`; this class takes already-built parts.

    Args:
        workload: the model's quantization points.
        cost_model: the platform's cost model.
        evaluator_factory: a callable returning the evaluator; picklable when
            ``workers > 1`` (it is built once in each worker process).
        objectives: objective names (``"error"`` plus platform metrics).
        constraints: see :func:`~mohaq.search.objectives.parse_constraints`.
        bit_choices: precisions to search (None: 2/4/8/16 allowed by the platform).
        budget: distinct evaluations, baselines included.
        optimizer: nevergrad registry name, ``"TwoPointsDE-LHS"`` or ``"nsga2"``.
        seed: random seed of the optimizer.
        workers: evaluations in flight at once (processes).
        run_dir: where everything is written.
        resume: continue the run in ``run_dir``.
        logger: a Lightning logger (its ``experiment`` is a SummaryWriter) or a
            SummaryWriter; None writes to ``run_dir/tensorboard``; False: none.
        progress: show a tqdm progress bar.
        executor: a concurrent.futures executor for the workers (e.g. submitit's);
            None starts a spawn process pool when ``workers > 1``.
        rescore_test: re-score the final front on the test set.
        report_every: evaluations per hypervolume point ("generation").
        nsga2_population, nsga2_offspring: NSGA-II sizes (MOHAQ: 40 and 10).
        seed_assignments: evaluated right after the baselines (origin ``"seed"``)
            and told to the optimizer, e.g. a previous stage's front that a
            continued search starts from.

    Raises:
        SearchConfigError, ObjectiveError, SearchSpaceError, OptimizerNameError:
            for invalid settings, before any evaluation.
    """

    def __init__(
        self,
        *,
        workload: Workload,
        cost_model: Any,
        evaluator_factory: Callable[[], Any],
        objectives: Sequence[str] = (ERROR, "speedup"),
        constraints: Mapping[str, float] | None = None,
        bit_choices: Sequence[int] | None = None,
        budget: int = 200,
        optimizer: str = DEFAULT_OPTIMIZER,
        seed: int = 0,
        workers: int = 1,
        run_dir: str | Path,
        resume: bool = False,
        logger: Any = None,
        progress: bool = True,
        executor: Executor | None = None,
        rescore_test: bool = True,
        report_every: int = 10,
        nsga2_population: int = 40,
        nsga2_offspring: int = 10,
        seed_assignments: Sequence[BitAssignment] = (),
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise SearchConfigError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise SearchConfigError(f"budget must be a positive integer, got {budget!r}")
        if report_every < 1:
            raise SearchConfigError(f"report_every must be >= 1, got {report_every}")
        validate_optimizer_name(optimizer)
        self.workload = workload
        self.cost_model = cost_model
        self.objectives = ObjectiveSet(objectives, cost_model)
        self.constraints: tuple[Constraint, ...] = parse_constraints(
            constraints, cost_model.metric_names
        )
        self.space = SearchSpace(
            workload,
            bit_choices,
            allowed_bits=getattr(cost_model, "allowed_bits", None),
            shared_layer_precision=bool(getattr(cost_model, "shared_layer_precision", False)),
        )
        self.baseline_bits = tuple(b for b in BASELINE_BITS if b in self.space.choices)
        if budget < len(self.baseline_bits):
            raise SearchConfigError(
                f"budget {budget} is below the {len(self.baseline_bits)} uniform baselines "
                f"({', '.join(f'{b}-bit' for b in self.baseline_bits)}); use budget >= {len(self.baseline_bits)}"
            )
        check_achievable(self.space, cost_model, self.constraints)
        self.feasibility = CheapFeasibility(self.space, cost_model, self.constraints)
        self.reference = reference_point(self.objectives, self.space, cost_model, self.constraints)
        self.evaluator_factory = evaluator_factory
        self.budget = budget
        self.optimizer_name = optimizer
        self.seed = int(seed)
        self.workers = workers
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.logger = logger
        self.progress = progress
        self.executor = executor
        self.rescore_test = rescore_test
        self.report_every = report_every
        self.nsga2_population = nsga2_population
        self.nsga2_offspring = nsga2_offspring
        self.seed_genes = [self.space.encode(a) for a in seed_assignments]
        self._evaluator: Any = None
        self._metric_cache: dict[tuple[int, ...], dict[str, float]] = {}

    # -- settings and parts -------------------------------------------------------------
    @property
    def parallel(self) -> bool:
        return self.workers > 1 or self.executor is not None

    def settings(self) -> dict[str, Any]:
        return {
            "objectives": list(self.objectives.names),
            "maximized": [o.name for o in self.objectives.objectives if o.maximize],
            "constraints": [c.describe() for c in self.constraints],
            "space": self.space.describe(),
            "points": list(self.workload.names),
            "optimizer": self.optimizer_name,
            "seed": self.seed,
            "budget": self.budget,
            "workers": self.workers,
            "reference": self.reference,
            "platform": str(getattr(self.cost_model, "name", type(self.cost_model).__name__)),
        } | ({"seeds": [list(g) for g in self.seed_genes]} if self.seed_genes else {})

    def _make_proposer(self) -> Any:
        if self.optimizer_name == NSGA2_NAME:
            return NSGA2(
                self.space.num_genes,
                len(self.space.choices),
                population_size=self.nsga2_population,
                offspring=self.nsga2_offspring,
                seed=self.seed,
                feasible=self.feasibility,
            )
        parametrization = self.space.parametrization()
        if self.feasibility.constraints or self._platform_restricts():
            parametrization.register_cheap_constraint(self.feasibility)
        return NevergradProposer(
            parametrization,
            self.optimizer_name,
            budget=self.budget,
            workers=self.workers,
            seed=self.seed,
            reference=self.reference,
        )

    def _platform_restricts(self) -> bool:
        return getattr(self.cost_model, "memory_capacity_bytes", None) is not None

    def _state_path(self) -> Path:
        name = (
            persistence.NSGA2_STATE
            if self.optimizer_name == NSGA2_NAME
            else persistence.OPTIMIZER_STATE
        )
        return self.run_dir / name

    def _save_state(self, proposer: Any, told: int) -> None:
        """Optimizer checkpoint: nevergrad's pickle (what ``optimizer.dump``
        writes) or NSGA-II's JSON, with the number of log lines told to it."""
        if isinstance(proposer, NSGA2):
            persistence.write_json_atomic(
                self._state_path(), {"told": told, "state": proposer.state_dict()}
            )
        else:
            import pickle

            payload = {"told": told, "optimizer": proposer.state_bytes()}
            atomic_write_bytes(self._state_path(), pickle.dumps(payload))

    def _load_state(self, proposer: Any) -> int:
        path = self._state_path()
        if not path.exists():
            return 0
        if isinstance(proposer, NSGA2):
            import json

            payload = json.loads(path.read_text())
            proposer.load_state_dict(payload["state"])
        else:
            import pickle

            payload = pickle.loads(path.read_bytes())
            proposer.load_state_bytes(payload["optimizer"])
        return int(payload["told"])

    def evaluator(self) -> Any:
        if self._evaluator is None:
            self._evaluator = self.evaluator_factory()
        return self._evaluator

    # -- scoring helpers ----------------------------------------------------------------
    def _metrics(self, genes: tuple[int, ...], assignment: BitAssignment) -> dict[str, float]:
        if genes not in self._metric_cache:
            self._metric_cache[genes] = metric_totals(self.cost_model, self.workload, assignment)
        return self._metric_cache[genes]

    def _violation_amount(
        self, metrics: Mapping[str, float], error: float | None, platform: int
    ) -> float:
        amount = float(platform)
        for c in self.constraints:
            if c.metric == ERROR and error is None:
                continue
            value = error if c.metric == ERROR else metrics[c.metric]
            amount += c.violation(float(value)) / max(abs(c.bound), 1e-12)
        return amount

    def _penalized_losses(self, metrics: Mapping[str, float], amount: float) -> list[float]:
        # Beyond the reference point, and worse the more a constraint is broken,
        # so the optimizer is pulled toward the feasible region.
        error_bound = self.reference[self.objectives.names.index(ERROR)]
        return self.objectives.losses(self.objectives.values(2.0 * error_bound + amount, metrics))

    def _record(
        self,
        index: int,
        genes: tuple[int, ...],
        assignment: BitAssignment,
        error: float,
        seconds: float,
        origin: str,
        label: str,
        evaluator_name: str,
    ) -> EvaluationRecord:
        metrics = self._metrics(genes, assignment)
        violations = self.feasibility.violations(assignment, metrics)
        for c in self.constraints:
            if c.metric == ERROR and not c.satisfied(error):
                violations.append(f"{c.label}: error = {error:.4g}, bound {c.bound:g}")
        values = self.objectives.values(error, metrics)
        return EvaluationRecord(
            index=index,
            bits=assignment.to_dict(),
            genes=list(genes),
            objectives=values,
            losses=self.objectives.losses(values),
            metrics={**metrics, **self._evaluation_extras()},
            error=float(error),
            feasible=not violations,
            violations=violations,
            evaluator=evaluator_name,
            seconds=float(seconds),
            origin=origin,
            label=label,
        )

    def _violation_of(self, record: EvaluationRecord) -> float:
        platform = len(self.cost_model.check(self.workload, BitAssignment.from_dict(record.bits)))
        return self._violation_amount(record.metrics, record.error, platform)

    # -- the run ------------------------------------------------------------------------
    def run(self) -> SearchResult:
        from mohaq.search.report import SearchReporter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        persistence.check_or_write_settings(self.run_dir, self.settings(), resume=self.resume)
        log = EvaluationLog(self.run_dir)
        logged = log.load() if self.resume else []
        indices = [r.index for r in logged]
        if indices != list(range(len(indices))):
            raise ResumeError(
                f"{log.path} has indices {indices[:10]}...; expected 0, 1, 2, ... in order"
            )
        reporter = SearchReporter(self, resumed=len(logged))
        try:
            if self.parallel:
                records, stopped = self._run_parallel(log, logged, reporter)
            else:
                records, stopped = self._run_sequential(log, logged, reporter)
            front = feasible_front(records)
            test_errors = self._test_errors(front) if self.rescore_test else {}
            result = SearchResult(
                run_dir=self.run_dir,
                records=records,
                front=front,
                test_errors=test_errors,
                baselines=[r for r in records if r.origin == "baseline"],
                reference=list(self.reference),
                hypervolume=hypervolume([r.losses for r in front], self.reference),
                objectives=self.objectives.names,
                optimizer=self.optimizer_name,
                stopped_early=stopped,
            )
            result.files = reporter.finish(result)
            return result
        finally:
            reporter.close()
            self._shutdown()

    def _baseline_plan(self) -> list[tuple[tuple[int, ...], BitAssignment, str]]:
        """Uniform baselines, then the seed assignments not already planned."""
        plan = []
        for bits in self.baseline_bits:
            assignment = self.space.uniform(bits)
            plan.append((self.space.encode(assignment), assignment, f"uniform-{bits}"))
        planned = {genes for genes, _, _ in plan}
        for number, genes in enumerate(self.seed_genes):
            if genes not in planned:
                planned.add(genes)
                plan.append((genes, self.space.decode(genes), f"seed-{number}"))
        return plan

    @staticmethod
    def _origin(label: str) -> str:
        return "seed" if label.startswith("seed-") else "baseline"

    def _evaluate_now(self, assignment: BitAssignment) -> tuple[float, float]:
        start = time.perf_counter()
        error = self.evaluator().evaluate(assignment, OPTIMIZATION)
        return float(error), time.perf_counter() - start

    def _evaluator_name(self) -> str:
        if self._evaluator is not None:
            return str(getattr(self._evaluator, "name", "ptq"))
        return str(getattr(self.evaluator_factory, "evaluator_name", "ptq"))

    def _evaluation_extras(self) -> dict[str, float]:
        """Per-evaluation values an in-process evaluator reports about its last
        evaluation (``last_metrics``, e.g. the beacon-aware evaluator's beacon
        distance); stored in the record's metrics. Worker evaluators report none."""
        evaluator = self._evaluator
        extras = getattr(evaluator, "last_metrics", None) if evaluator is not None else None
        return {str(k): float(v) for k, v in (extras or {}).items()}

    def _run_sequential(
        self, log: EvaluationLog, logged: list[EvaluationRecord], reporter: Any
    ) -> tuple[list[EvaluationRecord], str | None]:
        """Deterministic loop; on resume the optimizer is replayed from its seed
        and answered from the log until the log runs out."""
        records: list[EvaluationRecord] = []
        cache: dict[tuple[int, ...], EvaluationRecord] = {}
        proposer = self._make_proposer()

        def obtain(
            genes: tuple[int, ...], assignment: BitAssignment, origin: str, label: str
        ) -> EvaluationRecord:
            index = len(records)
            if index < len(logged):
                record = logged[index]
                if tuple(record.genes) != genes:
                    raise ResumeError(
                        f"resume diverged at evaluation {index}: the log has genes {record.genes}, "
                        f"the replayed optimizer proposed {list(genes)}; were settings or code changed?"
                    )
            else:
                error, seconds = self._evaluate_now(assignment)
                record = self._record(
                    index, genes, assignment, error, seconds, origin, label, self._evaluator_name()
                )
                log.append(record)
                reporter.evaluated(record, records + [record])
            records.append(record)
            cache[genes] = record
            return record

        for genes, assignment, label in self._baseline_plan():
            if len(records) >= self.budget:
                break
            record = obtain(genes, assignment, self._origin(label), label)
            proposer.tell_not_asked(genes, record.losses, self._violation_of(record))
        stopped = self._propose_loop(
            proposer,
            records,
            cache,
            evaluate=lambda token, genes, assignment: (
                token,
                obtain(genes, assignment, "optimizer", ""),
            ),
            save=lambda: self._save_state(proposer, len(records)),
        )
        self._save_state(proposer, len(records))
        return records, stopped

    def _propose_loop(
        self, proposer: Any, records: list, cache: dict, evaluate: Callable, save: Callable
    ) -> str | None:
        idle = 0
        max_idle = max(1000, 20 * self.budget)
        rejected: dict[tuple[int, ...], tuple[list[float], float]] = {}
        while len(records) < self.budget:
            if len(cache) >= self.space.size:
                return f"the whole search space ({self.space.size} assignments) has been evaluated"
            if idle >= max_idle:
                return f"the optimizer proposed {idle} already-evaluated or infeasible candidates in a row"
            token, value = proposer.ask()
            genes = self.space.genes_from_value(value)
            if genes in cache:
                record = cache[genes]
                proposer.tell(token, record.losses, self._violation_of(record))
                idle += 1
                continue
            if genes not in rejected:
                assignment = self.space.decode(genes)
                metrics = self._metrics(genes, assignment)
                platform = self.cost_model.check(self.workload, assignment)
                violations = self.feasibility.violations(assignment, metrics)
                if violations:
                    amount = self._violation_amount(metrics, None, len(platform)) or 1.0
                    rejected[genes] = (self._penalized_losses(metrics, amount), amount)
            if genes in rejected:
                losses, amount = rejected[genes]
                proposer.tell(token, losses, amount)
                idle += 1
                continue
            idle = 0
            token, record = evaluate(token, genes, self.space.decode(genes))
            proposer.tell(token, record.losses, self._violation_of(record))
            if len(records) % self.report_every == 0:
                save()
        return None

    # -- parallel -----------------------------------------------------------------------
    def _submitter(self) -> Any:
        from mohaq.search.workers import TaskSubmitter, make_process_pool

        if getattr(self, "_tasks", None) is None:
            if self.executor is not None:
                self._tasks = TaskSubmitter(self.executor, self.evaluator_factory, per_call=True)
            else:
                pool = make_process_pool(self.evaluator_factory, self.workers)
                self._owned_pool = pool
                self._tasks = TaskSubmitter(pool, self.evaluator_factory, per_call=False)
        return self._tasks

    def _shutdown(self) -> None:
        pool = getattr(self, "_owned_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            self._owned_pool = None
            self._tasks = None

    def _run_parallel(
        self, log: EvaluationLog, logged: list[EvaluationRecord], reporter: Any
    ) -> tuple[list[EvaluationRecord], str | None]:
        records: list[EvaluationRecord] = list(logged)
        cache = {tuple(r.genes): r for r in records}
        proposer = self._make_proposer()
        told = self._load_state(proposer) if self.resume else 0
        for record in records[told:]:
            proposer.tell_not_asked(tuple(record.genes), record.losses, self._violation_of(record))
        tasks = self._submitter()
        inflight: dict[Future, tuple[list[Any], tuple[int, ...], BitAssignment, str, str]] = {}
        by_genes: dict[tuple[int, ...], Future] = {}

        def complete(future: Future) -> None:
            tokens, genes, assignment, origin, label = inflight.pop(future)
            by_genes.pop(genes, None)
            error, seconds = future.result()
            record = self._record(
                len(records),
                genes,
                assignment,
                error,
                seconds,
                origin,
                label,
                self._evaluator_name(),
            )
            log.append(record)
            records.append(record)
            cache[genes] = record
            reporter.evaluated(record, records)
            violation = self._violation_of(record)
            for token in tokens:
                if token is None:
                    proposer.tell_not_asked(genes, record.losses, violation)
                else:
                    proposer.tell(token, record.losses, violation)
            if len(records) % self.report_every == 0:
                self._save_state(proposer, len(records))

        def drain(block_until_one: bool) -> None:
            if not inflight:
                return
            done, _ = wait(
                list(inflight), timeout=None if block_until_one else 0, return_when=FIRST_COMPLETED
            )
            for future in sorted(done, key=lambda f: id(f)):
                complete(future)

        # Baselines first, in parallel.
        for genes, assignment, label in self._baseline_plan():
            if genes in cache or len(records) + len(inflight) >= self.budget:
                continue
            while len(inflight) >= self.workers:
                drain(True)
            future = tasks.submit(assignment.to_dict(), OPTIMIZATION)
            inflight[future] = ([None], genes, assignment, self._origin(label), label)
            by_genes[genes] = future
        while inflight:
            drain(True)

        # Asynchronous ask/tell with up to `workers` candidates in flight.
        idle, max_idle = 0, max(1000, 20 * self.budget)
        rejected: dict[tuple[int, ...], tuple[list[float], float]] = {}
        stopped: str | None = None
        while len(records) < self.budget:
            while len(inflight) < self.workers and len(records) + len(inflight) < self.budget:
                if len(cache) + len(inflight) >= self.space.size:
                    stopped = (
                        f"the whole search space ({self.space.size} assignments) has been evaluated"
                    )
                    break
                if idle >= max_idle:
                    stopped = f"the optimizer proposed {idle} already-evaluated or infeasible candidates in a row"
                    break
                token, value = proposer.ask()
                genes = self.space.genes_from_value(value)
                if genes in cache:
                    proposer.tell(token, cache[genes].losses, self._violation_of(cache[genes]))
                    idle += 1
                    continue
                if genes in by_genes:
                    inflight[by_genes[genes]][0].append(token)
                    idle += 1
                    continue
                assignment = self.space.decode(genes)
                if genes not in rejected:
                    metrics = self._metrics(genes, assignment)
                    if self.feasibility.violations(assignment, metrics):
                        platform = self.cost_model.check(self.workload, assignment)
                        amount = self._violation_amount(metrics, None, len(platform)) or 1.0
                        rejected[genes] = (self._penalized_losses(metrics, amount), amount)
                if genes in rejected:
                    proposer.tell(token, *rejected[genes])
                    idle += 1
                    continue
                idle = 0
                future = tasks.submit(assignment.to_dict(), OPTIMIZATION)
                inflight[future] = ([token], genes, assignment, "optimizer", "")
                by_genes[genes] = future
            if not inflight:
                break
            drain(True)
            if stopped and not inflight:
                break
        while inflight:
            drain(True)
        self._save_state(proposer, len(records))
        return records, stopped

    # -- test set -----------------------------------------------------------------------
    def _test_errors(self, front: Sequence[EvaluationRecord]) -> dict[int, float]:
        """Test-set error of each front solution, cached in ``test_errors.json``."""
        import json

        path = self.run_dir / "test_errors.json"
        stored = (
            {int(k): float(v) for k, v in json.loads(path.read_text()).items()}
            if path.exists()
            else {}
        )
        wanted = [r for r in front if r.index not in stored]
        if wanted:
            if self.parallel:
                tasks = self._submitter()
                futures = {r.index: tasks.submit(r.bits, TEST) for r in wanted}
                for index, future in futures.items():
                    stored[index] = float(future.result()[0])
            else:
                for record in wanted:
                    stored[record.index] = float(
                        self.evaluator().evaluate(BitAssignment.from_dict(record.bits), TEST)
                    )
            persistence.write_json_atomic(path, {str(k): v for k, v in sorted(stored.items())})
        return {r.index: stored[r.index] for r in front}


def _resolve_platform(platform: Any, overrides: Mapping[str, Any] | None) -> Any:
    if not isinstance(platform, (str, Path)):
        if overrides:
            raise SearchConfigError(
                "platform_overrides apply only to a platform given by name or path"
            )
        return platform
    from mohaq.hardware import load_platform

    return load_platform(str(platform), **dict(overrides or {}))


def run_search(
    *,
    system: Any = None,
    datamodule: Any = None,
    platform: Any,
    objectives: Sequence[str] = (ERROR, "speedup"),
    constraints: Mapping[str, float] | None = None,
    bit_choices: Sequence[int] | None = None,
    budget: int = 200,
    optimizer: str = DEFAULT_OPTIMIZER,
    seed: int = 0,
    workers: int = 1,
    run_dir: str | Path,
    resume: bool = False,
    checkpoint_path: str | Path | None = None,
    logger: Any = None,
    progress: bool = True,
    batch_size: int = 16,
    rescore_test: bool = True,
    platform_overrides: Mapping[str, Any] | None = None,
    workload: Workload | None = None,
    evaluator: Any = None,
    evaluator_factory: Callable[[], Any] | None = None,
    executor: Executor | None = None,
    nsga2_population: int = 40,
    nsga2_offspring: int = 10,
    seed_assignments: Sequence[BitAssignment] = (),
) -> SearchResult:
    """Searches per-point precisions for the Pareto front of error and hardware cost.

    Args:
        system: the float AcousticSystem (loaded); gives the workload and, with
            ``datamodule``, the in-process PTQ evaluator.
        datamodule: the TIMIT DataModule (optimization set and test set).
        platform: a cost model, or a platform name / YAML path for
            ``mohaq.hardware.load_platform``.
        objectives: ``"error"`` plus metrics of the platform.
        constraints: e.g. ``{"max_error": 0.24, "max_memory_mb": 6}``; keys
            ``max_<metric>``, ``min_<metric>``, ``"<metric><="``, ``"<metric>>="``.
        bit_choices: precisions to search; None: 2/4/8/16 that the platform allows.
        budget: distinct evaluations including the uniform baselines.
        optimizer: ``"TwoPointsDE-LHS"`` (default), ``"nsga2"`` (MOHAQ's
            setting), ``"RandomSearch"`` or any ``ng.optimizers.registry`` name.
        seed: random seed.
        workers: evaluations in flight; > 1 uses worker processes that each load
            ``checkpoint_path`` and the DataModule once.
        run_dir: the run directory.
        resume: continue the run in ``run_dir``.
        checkpoint_path: the float checkpoint (needed when ``workers > 1``).
        logger: Lightning logger / SummaryWriter for TensorBoard; None: run_dir/tensorboard; False: off.
        progress: tqdm progress bar.
        batch_size: utterances per padded batch when scoring.
        rescore_test: re-score the final front on the test set.
        platform_overrides: keyword overrides for ``load_platform``.
        workload: the workload when no ``system`` is given (tests, dry runs).
        evaluator: an already built evaluator (sequential runs).
        evaluator_factory: a picklable callable returning an evaluator (overrides
            the default PTQ one; used by worker processes).
        executor: a concurrent.futures executor for the workers, e.g.
            ``submitit.AutoExecutor`` (see docs/cluster.md).
        nsga2_population, nsga2_offspring: NSGA-II sizes.
        seed_assignments: evaluated after the baselines and told to the optimizer.

    Returns:
        The :class:`SearchResult`.

    Raises:
        SearchConfigError: inconsistent arguments.
        ObjectiveError: an objective or constraint the platform cannot provide,
            or a constraint no assignment can meet (names the best achievable value).
        SearchSpaceError: a bit choice the platform cannot run (lists the allowed ones).
        OptimizerNameError: an unknown optimizer (lists valid ones).
        ResumeError: a run directory that does not match.
    """
    if workload is None:
        if system is None:
            raise SearchConfigError("give system (the float AcousticSystem) or workload")
        workload = system.workload()
    cost_model = _resolve_platform(platform, platform_overrides)
    if evaluator is not None and evaluator_factory is not None:
        raise SearchConfigError("give evaluator or evaluator_factory, not both")
    if evaluator is not None:
        if workers > 1 or executor is not None:
            raise SearchConfigError(
                "an in-process evaluator cannot be shared with worker processes; "
                "give evaluator_factory (picklable) or checkpoint_path"
            )
        factory: Callable[[], Any] = EvaluatorInstance(evaluator)
    elif evaluator_factory is not None:
        factory = evaluator_factory
    elif workers > 1 or executor is not None:
        if checkpoint_path is None or datamodule is None:
            raise SearchConfigError(
                f"workers={workers} needs checkpoint_path and datamodule: each worker process "
                "loads the checkpoint and the optimization set itself"
            )
        factory = PTQEvaluatorSpec.from_objects(
            str(checkpoint_path), datamodule, system, batch_size=batch_size
        )
    else:
        if system is None or datamodule is None:
            raise SearchConfigError("the PTQ evaluator needs system and datamodule")
        factory = _LocalPTQ(system, datamodule, batch_size)
    controller = SearchController(
        workload=workload,
        cost_model=cost_model,
        evaluator_factory=factory,
        objectives=objectives,
        constraints=constraints,
        bit_choices=bit_choices,
        budget=budget,
        optimizer=optimizer,
        seed=seed,
        workers=workers,
        run_dir=run_dir,
        resume=resume,
        logger=logger,
        progress=progress,
        executor=executor,
        rescore_test=rescore_test,
        nsga2_population=nsga2_population,
        nsga2_offspring=nsga2_offspring,
        seed_assignments=seed_assignments,
    )
    return controller.run()


class _LocalPTQ:
    """Builds the in-process PTQ evaluator on first use (calibration is not free)."""

    evaluator_name = "ptq"

    def __init__(self, system: Any, datamodule: Any, batch_size: int) -> None:
        self.system, self.datamodule, self.batch_size = system, datamodule, batch_size

    def __call__(self) -> PTQEvaluator:
        return PTQEvaluator(self.system, self.datamodule, batch_size=self.batch_size)


def genes_array(record: EvaluationRecord) -> np.ndarray:
    return np.asarray(record.genes, dtype=int)
