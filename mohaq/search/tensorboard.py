"""A search's curves in TensorBoard: every evaluation's error, and the
hypervolume and front size every ``report_every`` evaluations; at the end the
Pareto plot and the front's hyperparameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mohaq.search.callbacks import SearchCallback, SearchInfo, SearchProgress
from mohaq.search.records import EvaluationRecord

TENSORBOARD = "tensorboard"


class TensorBoardCallback(SearchCallback):
    """Writes a search to TensorBoard.

    Args:
        writer: a ``SummaryWriter`` or a Lightning logger (its ``experiment``);
            None: a writer of its own in ``<run_dir>/tensorboard``.
    """

    def __init__(self, writer: Any = None) -> None:
        self.given = writer
        self.writer: Any = None
        self.owned = False
        self.report_every = 10

    def on_search_start(self, info: SearchInfo) -> None:
        self.report_every = info.settings.report_every
        if self.given is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(info.run_dir / TENSORBOARD))
            self.owned = True
        else:
            self.writer = getattr(self.given, "experiment", self.given)

    def on_evaluation(self, record: EvaluationRecord, progress: SearchProgress) -> None:
        self.writer.add_scalar("search/error", record.error, record.index)
        if progress.evaluations % self.report_every == 0:
            self.writer.add_scalar(
                "search/hypervolume", progress.hypervolume(), progress.evaluations
            )
            self.writer.add_scalar("search/front_size", len(progress.front), progress.evaluations)

    def on_search_end(self, result: Any) -> None:
        from mohaq.search.report import pareto_figure

        count = len(result.records)
        self.writer.add_scalar("search/hypervolume", result.hypervolume, count)
        figure = pareto_figure(result.records, result.front, result.objectives)
        self.writer.add_figure("search/pareto", figure, count)
        for r in result.front:
            hparams = {f"bits/{k}": v for k, v in r.bits.items()}
            metrics = {f"front/{k}": float(v) for k, v in r.objectives.items()}
            if r.index in result.test_errors:
                metrics["front/test_error"] = result.test_errors[r.index]
            self.writer.add_hparams(hparams, metrics, run_name=f"front_{r.index}")
        self.writer.flush()
        result.files["tensorboard"] = Path(getattr(self.writer, "log_dir", ""))

    def teardown(self) -> None:
        if self.owned and self.writer is not None:
            self.writer.close()
        self.writer = None
