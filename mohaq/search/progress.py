"""A tqdm progress bar over a search's evaluations."""

from __future__ import annotations

from typing import Any

from mohaq.search.callbacks import SearchCallback, SearchInfo, SearchProgress
from mohaq.search.records import EvaluationRecord


class ProgressBar(SearchCallback):
    """One bar per search: evaluations done of the budget, front size, best feasible error.

    Args:
        description: the bar's label.
    """

    def __init__(self, description: str = "search") -> None:
        self.description = description
        self.bar: Any = None
        self.best: float | None = None

    def on_search_start(self, info: SearchInfo) -> None:
        from tqdm.auto import tqdm

        feasible = [r.error for r in info.resumed if r.feasible]
        self.best = min(feasible) if feasible else None
        self.bar = tqdm(
            total=info.budget, initial=len(info.resumed), desc=self.description, unit="eval"
        )

    def on_evaluation(self, record: EvaluationRecord, progress: SearchProgress) -> None:
        if record.feasible and (self.best is None or record.error < self.best):
            self.best = record.error
        if self.bar is None:
            return
        self.bar.update(1)
        postfix: dict[str, Any] = {"front": len(progress.front)}
        if self.best is not None:
            postfix["best_error"] = f"{100 * self.best:.2f}%"
        self.bar.set_postfix(postfix, refresh=False)

    def teardown(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
