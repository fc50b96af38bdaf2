"""Search callbacks: what reports, progress bars and loggers see of a search.

A callback receives a description of the search when it starts, every record
as it is logged (with the search's progress) and the result at the end,
never the loop itself (Lightning's callback hooks are the model)::

    class PrintBest(SearchCallback):
        def on_evaluation(self, record, progress):
            if record in progress.front:
                print(record.index, record.error)

Built-ins: :class:`~mohaq.search.progress.ProgressBar`,
:class:`~mohaq.search.tensorboard.TensorBoardCallback` and
:class:`~mohaq.search.report.ReportWriter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mohaq.search.pareto import hypervolume
from mohaq.search.records import EvaluationRecord

if TYPE_CHECKING:
    from mohaq.search.run import SearchResult
    from mohaq.search.settings import SearchSettings


@dataclass(frozen=True)
class SearchInfo:
    """A search as callbacks see it when it starts.

    Attributes:
        settings: the search settings.
        algorithm: the algorithm's registered name.
        problem: the resolved problem (``SearchProblem.describe()``): platform,
            objectives, maximized, constraints, space, points, reference.
        run_dir: the run directory.
        resumed: records already logged by an earlier run of this search.
    """

    settings: SearchSettings
    algorithm: str
    problem: dict[str, Any]
    run_dir: Path
    resumed: Sequence[EvaluationRecord] = field(default_factory=tuple)

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.problem["objectives"])

    @property
    def reference(self) -> tuple[float, ...]:
        return tuple(self.problem["reference"])

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(self.problem["points"])

    @property
    def budget(self) -> int:
        return self.settings.budget


@dataclass(frozen=True)
class SearchProgress:
    """The state of a search after an evaluation.

    Attributes:
        records: every record so far, in log order.
        front: the feasible Pareto front so far.
        reference: the hypervolume reference point.
    """

    records: Sequence[EvaluationRecord]
    front: Sequence[EvaluationRecord]
    reference: Sequence[float]

    @property
    def evaluations(self) -> int:
        return len(self.records)

    def hypervolume(self) -> float:
        return hypervolume([r.losses for r in self.front], self.reference)


class SearchCallback:
    """Hooks of a search; override what you need."""

    def on_search_start(self, info: SearchInfo) -> None:
        """Before the first evaluation (after a resume, ``info.resumed`` holds the log)."""

    def on_evaluation(self, record: EvaluationRecord, progress: SearchProgress) -> None:
        """After ``record`` is logged."""

    def on_search_end(self, result: SearchResult) -> None:
        """After the front is final (and re-scored on the test set); callbacks may
        add the files they wrote to ``result.files``."""

    def teardown(self) -> None:
        """Always called last, also when the search failed."""


class CallbackList(SearchCallback):
    """Calls each callback in order."""

    def __init__(self, callbacks: Sequence[SearchCallback]) -> None:
        self.callbacks = list(callbacks)

    def on_search_start(self, info: SearchInfo) -> None:
        for callback in self.callbacks:
            callback.on_search_start(info)

    def on_evaluation(self, record: EvaluationRecord, progress: SearchProgress) -> None:
        for callback in self.callbacks:
            callback.on_evaluation(record, progress)

    def on_search_end(self, result: SearchResult) -> None:
        for callback in self.callbacks:
            callback.on_search_end(result)

    def teardown(self) -> None:
        for callback in self.callbacks:
            callback.teardown()
