"""The search loop: propose -> dedupe -> feasibility -> evaluate -> tell ->
persist, one loop for sequential and parallel runs over any executor.

Guarantees:

* a gene vector is evaluated at most once (cached outcomes are told again);
* a proposal that breaks a cheap constraint is repaired (precisions lowered
  until it fits, :meth:`~mohaq.search.problem.SearchProblem.repair`) before it
  is evaluated: the algorithm is told the repaired vector's outcome;
* every evaluation is appended to ``evaluations.jsonl`` as it finishes;
* uniform baselines and seeds are evaluated first and told to the algorithm;
* resume: the algorithm restarts from its last checkpoint (or from its seed)
  and is told the logged evaluations it had not seen, each when it proposes
  it again, so nothing is evaluated twice. A sequential run (one worker)
  proposes exactly what it proposed before and ends exactly where an
  uninterrupted run ends; a proposal the log does not expect there raises
  :class:`~mohaq.search.records.ResumeError`. With several workers the
  outcomes arrived in another order, so the first proposal the log does not
  expect ends the replay: the logged evaluations not proposed yet are told as
  not asked, and the search goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from mohaq.search.callbacks import SearchCallback, SearchProgress
from mohaq.search.evaluators import OPTIMIZATION
from mohaq.search.executors import EvaluationExecutor, Timed
from mohaq.search.pareto import ParetoArchive
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers.base import Genes, Outcome, Proposer, as_genes
from mohaq.search.records import EvaluationLog, EvaluationRecord, ProposerCheckpoint, ResumeError

#: Seconds between proposer checkpoints. A resume replays the proposals made
#: since the last one from the log (no evaluation is repeated), so saving often
#: buys little while pickling a large optimizer state costs milliseconds.
CHECKPOINT_INTERVAL_S = 30.0


@dataclass
class _InFlight:
    future: Future[Timed]
    origin: str
    label: str
    asked: list[Genes | None] = field(default_factory=list)  # None: told as not asked
    order: int = 0


@dataclass
class LoopResult:
    records: list[EvaluationRecord]
    front: list[EvaluationRecord]
    stopped_early: str | None


class SearchLoop:
    """Runs one search to its budget (see the module docstring).

    Args:
        problem: the search problem.
        proposer: the algorithm.
        algorithm: its registered name (stored with checkpoints).
        executor: runs the evaluations.
        log: the evaluation log.
        checkpoint: the proposer checkpoint of the run directory.
        callbacks: told about every record.
        budget: distinct evaluations, baselines and seeds included.
        workers: evaluations in flight at once.
        seeds: gene vectors evaluated right after the baselines.
        checkpoint_interval_s: seconds between proposer checkpoints.
        racing: give each optimizer candidate the error above which it is
            dominated by the front (or breaks the error bound), so a
            multi-fidelity evaluator may stop early.
    """

    def __init__(
        self,
        *,
        problem: SearchProblem,
        proposer: Proposer,
        algorithm: str,
        executor: EvaluationExecutor,
        log: EvaluationLog,
        checkpoint: ProposerCheckpoint,
        callbacks: SearchCallback,
        budget: int,
        workers: int = 1,
        seeds: Sequence[Genes] = (),
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        racing: bool = False,
    ) -> None:
        self.racing = racing
        self.problem = problem
        self.proposer = proposer
        self.algorithm = algorithm
        self.executor = executor
        self.log = log
        self.checkpoint = checkpoint
        self.callbacks = callbacks
        self.budget = budget
        self.workers = workers
        self.strict_replay = workers == 1
        self.plan = problem.baseline_plan(seeds)
        self.checkpoint_interval_s = checkpoint_interval_s
        self.max_idle = max(1000, 20 * budget)
        self.records: list[EvaluationRecord] = []
        self.cache: dict[Genes, EvaluationRecord] = {}
        self.outcomes: dict[Genes, Outcome] = {}
        self.archive: ParetoArchive[EvaluationRecord] = ParetoArchive(lambda r: r.losses)
        self.inflight: dict[Genes, _InFlight] = {}
        self.replay: dict[Genes, EvaluationRecord] = {}
        self.told = 0
        self.idle = 0
        self._submitted = 0
        self._last_checkpoint = time.monotonic()

    # -- state ------------------------------------------------------------------------------
    def _remember(self, record: EvaluationRecord) -> Outcome:
        genes = as_genes(record.genes)
        self.records.append(record)
        self.cache[genes] = record
        outcome = self.problem.outcome_of(record)
        self.outcomes[genes] = outcome
        if record.feasible and record.fidelity >= 1.0:
            self.archive.add(record)
        return outcome

    def _restore(self, logged: Sequence[EvaluationRecord]) -> None:
        for record in logged:
            self._remember(record)
        restored = self.checkpoint.load(self.algorithm, len(logged))
        if restored is not None:
            self.told, state = restored
            self.proposer.load_state_dict(state)
        self.replay = {as_genes(r.genes): r for r in logged[self.told :]}

    def _leave_replay(self, proposed: Genes) -> None:
        """A new evaluation is about to start: everything logged must be told by now."""
        if not self.replay:
            return
        if self.strict_replay:
            expected = next(iter(self.replay.values()))
            raise ResumeError(
                f"resume diverged at evaluation {expected.index}: the log has genes "
                f"{expected.genes}, the algorithm proposed {list(proposed)}; were the settings "
                "or the code changed since the run was started?"
            )
        for genes in list(self.replay):
            self.proposer.tell(genes, self.outcomes[genes])
        self.replay.clear()

    def _save_checkpoint(self, force: bool = False) -> None:
        if self.replay:
            return  # the proposer has not been told every logged record yet
        now = time.monotonic()
        if not force and now - self._last_checkpoint < self.checkpoint_interval_s:
            return
        self.log.sync()  # a checkpoint never knows more than the log on disk
        self.checkpoint.save(self.algorithm, len(self.records), self.proposer.state_dict())
        self._last_checkpoint = now

    # -- evaluations ------------------------------------------------------------------------
    def _stop_above(self, genes: Genes) -> float | None:
        """The error above which ``genes`` is dominated by the (full-fidelity)
        front or breaks the error bound; None: no such error."""
        bound = self.problem.error_bound()
        costs = self.problem.cost_losses(genes)
        for record in self.archive.items():
            if all(
                c <= own
                for c, own in zip(
                    self.problem.cost_losses(as_genes(record.genes)), costs, strict=True
                )
            ):
                bound = record.error if bound is None else min(bound, record.error)
        return bound

    def _submit(self, genes: Genes, origin: str, label: str, asked: Genes | None) -> None:
        stop_above = self._stop_above(genes) if self.racing and origin == "optimizer" else None
        future = self.executor.submit(
            self.problem.assignment(genes).to_dict(), OPTIMIZATION, stop_above
        )
        self._submitted += 1
        self.inflight[genes] = _InFlight(future, origin, label, [asked], self._submitted)

    def _complete(self, genes: Genes) -> None:
        entry = self.inflight.pop(genes)
        result, seconds = entry.future.result()
        record = self.problem.record(
            len(self.records),
            genes,
            result,
            seconds=seconds,
            origin=entry.origin,
            label=entry.label,
        )
        self.log.append(record)
        outcome = self._remember(record)
        for asked in entry.asked:
            self.proposer.tell(genes if asked is None else asked, outcome)
        self.callbacks.on_evaluation(
            record, SearchProgress(self.records, self.archive.items(), self.problem.reference)
        )
        self._save_checkpoint()

    def _wait_for_one(self) -> None:
        futures = {entry.future: genes for genes, entry in self.inflight.items()}
        done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
        for genes in sorted((futures[f] for f in done), key=lambda g: self.inflight[g].order):
            self._complete(genes)

    def _room(self) -> int:
        used = len(self.records) + len(self.inflight)
        return min(self.workers - len(self.inflight), self.budget - used)

    # -- plan and proposals -----------------------------------------------------------------
    def _plan_item(self, genes: Genes, origin: str, label: str) -> None:
        record = self.cache.get(genes)
        if record is not None:
            if genes in self.replay:
                del self.replay[genes]
                self.proposer.tell(genes, self.outcomes[genes])
            return  # told before the checkpoint, or planned twice
        if genes in self.inflight:
            self.inflight[genes].asked.append(None)
            return
        self._leave_replay(genes)
        self._submit(genes, origin, label, None)

    def _proposal(self, asked: Genes) -> None:
        as_is = self.problem.is_feasible(asked) or self.proposer.evaluate_as_proposed(asked)
        genes = asked if as_is else self.problem.repair(asked)
        if genes is None:
            self.proposer.tell(asked, self.problem.unrepairable_outcome(asked))
            self.idle += 1
            return
        if genes in self.cache:
            if genes in self.replay:  # logged by the interrupted run: its evaluation
                del self.replay[genes]
                self.idle = 0
            else:
                self.idle += 1
            self.proposer.tell(asked, self.outcomes[genes])
            return
        if genes in self.inflight:
            self.inflight[genes].asked.append(asked)
            self.idle += 1
            return
        self._leave_replay(genes)
        self.idle = 0
        self._submit(genes, "optimizer", "", asked)

    def _stop_reason(self) -> str | None:
        if len(self.cache) + len(self.inflight) >= self.problem.space.size:
            return (
                f"the whole search space ({self.problem.space.size} assignments) has been evaluated"
            )
        if self.idle >= self.max_idle:
            return (
                f"the algorithm proposed {self.idle} already-evaluated or unrepairable "
                "candidates in a row"
            )
        return None

    # -- the run ----------------------------------------------------------------------------
    def run(self, logged: Sequence[EvaluationRecord] = ()) -> LoopResult:
        """Runs until ``budget`` evaluations exist; ``logged``: a resumed run's log."""
        self._restore(logged)
        plan = list(self.plan)
        stopped: str | None = None
        while True:
            while plan and self._room() > 0:
                self._plan_item(*plan.pop(0))
            while not plan and stopped is None and self._room() > 0:
                stopped = self._stop_reason()
                if stopped is not None:
                    break
                asked = self.proposer.ask(self._room())
                if not asked:
                    break  # the algorithm waits for outcomes in flight
                for genes in asked:
                    self._proposal(as_genes(genes))
            if not self.inflight:
                if plan and self._room() > 0:
                    continue
                if len(self.records) >= self.budget or stopped is not None:
                    break
                if not plan:
                    stopped = stopped or "the algorithm proposed nothing more"
                    break
            self._wait_for_one()
        while self.inflight:
            self._wait_for_one()
        self._save_checkpoint(force=True)
        front = sorted(self.archive.items(), key=lambda r: (r.error, r.index))
        return LoopResult(self.records, front, stopped)
