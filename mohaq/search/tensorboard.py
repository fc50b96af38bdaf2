"""A search in TensorBoard (``<run_dir>/tensorboard`` unless a writer is given).

- Scalars against the evaluation index: every objective (``evaluation/error``,
  ``evaluation/speedup``, ...), every other hardware metric of the platform
  (``hardware/energy``, ...), whether the candidate was feasible, and the
  share of the optimization set it was scored on when racing stopped it early.
- Every ``report_every`` evaluations: the hypervolume, the front size and the
  best feasible error (``search/...``).
- At the end: the plots as images (``plots/pareto``, and ``plots/fronts`` from
  the beacon stage), the front as one Markdown table (``search/front``, TEXT
  tab) and the search as one HParams session: its settings as hyperparameters,
  ``hp_metric`` = the front's hypervolume, with the front size and best errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mohaq.search.callbacks import SearchCallback, SearchInfo, SearchProgress
from mohaq.search.objectives import ERROR
from mohaq.search.records import EvaluationRecord
from mohaq.search.report import TENSORBOARD


def add_png(writer: Any, tag: str, path: Path, step: int) -> None:
    """Logs a PNG file as an image."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))
    writer.add_image(tag, pixels[..., :3], step, dataformats="HWC")


def log_images(log_dir: str | Path, images: Mapping[str, Path], step: int) -> None:
    """Adds PNG files to the TensorBoard run in ``log_dir`` (a run a search
    callback wrote and closed, e.g. the beacon stage's ``fronts.png``)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for tag, path in images.items():
            add_png(writer, tag, Path(path), step)
    finally:
        writer.close()


def _hparam(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


class TensorBoardCallback(SearchCallback):
    """Writes a search to TensorBoard (see the module docstring).

    Args:
        writer: a ``SummaryWriter`` or a Lightning logger (its ``experiment``);
            None: a writer of its own in ``<run_dir>/tensorboard``.
    """

    def __init__(self, writer: Any = None) -> None:
        self.given = writer
        self.writer: Any = None
        self.owned = False
        self.report_every = 10
        self.objectives: tuple[str, ...] = ()
        self.log_dir: Path | None = None
        self.best: float | None = None

    def on_search_start(self, info: SearchInfo) -> None:
        self.report_every = info.settings.report_every
        self.objectives = info.objectives
        if self.given is None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir = info.run_dir / TENSORBOARD
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
            self.owned = True
        else:
            self.writer = getattr(self.given, "experiment", self.given)
            self.log_dir = Path(getattr(self.writer, "log_dir", "") or info.run_dir)
        feasible = [r.error for r in info.resumed if r.feasible and r.fidelity >= 1.0]
        self.best = min(feasible) if feasible else None

    def on_evaluation(self, record: EvaluationRecord, progress: SearchProgress) -> None:
        step = record.index
        for name in self.objectives:
            self.writer.add_scalar(f"evaluation/{name}", record.objectives[name], step)
        for name, value in sorted(record.metrics.items()):
            if name not in self.objectives:
                self.writer.add_scalar(f"hardware/{name}", value, step)
        self.writer.add_scalar("evaluation/feasible", float(record.feasible), step)
        if record.fidelity < 1.0:
            self.writer.add_scalar("evaluation/fidelity", record.fidelity, step)
        if record.feasible and record.fidelity >= 1.0:
            self.best = record.error if self.best is None else min(self.best, record.error)
        if progress.evaluations % self.report_every == 0:
            self._progress(progress.hypervolume(), len(progress.front), progress.evaluations)

    def _progress(self, hypervolume: float, front_size: int, step: int) -> None:
        self.writer.add_scalar("search/hypervolume", hypervolume, step)
        self.writer.add_scalar("search/front_size", front_size, step)
        if self.best is not None:
            self.writer.add_scalar("search/best_error", self.best, step)

    def on_search_end(self, result: Any) -> None:
        count = len(result.records)
        self._progress(result.hypervolume, len(result.front), count)
        png = result.files.get("pareto_png")
        if png is not None and Path(png).is_file():
            add_png(self.writer, "plots/pareto", Path(png), count)
        else:
            import matplotlib.pyplot as plt

            from mohaq.search.plots import pareto_figure
            from mohaq.search.report import plot_context

            figure = pareto_figure(result.records, result.front, plot_context(result))
            self.writer.add_figure("plots/pareto", figure, count)
            plt.close(figure)
        self.writer.add_text("search/front", self._front_table(result), count)
        self._hparams(result)
        self.writer.flush()
        result.files["tensorboard"] = self.log_dir

    def _front_table(self, result: Any) -> str:
        from mohaq.search.report import markdown_table

        points = result.info.points
        costs = [o for o in result.objectives if o != ERROR]
        rows = [["index", *costs, "error (opt. set)", "error (test)", "bits: " + " ".join(points)]]
        for r in result.front:
            test = result.test_errors.get(r.index)
            rows.append(
                [
                    str(r.index),
                    *[f"{r.objectives[c]:.4g}" for c in costs],
                    f"{100 * r.error:.2f}%",
                    "" if test is None else f"{100 * test:.2f}%",
                    " ".join(str(r.bits[p]) for p in points),
                ]
            )
        return markdown_table(rows)

    def _hparams(self, result: Any) -> None:
        """The search as one HParams session in this run (not one run per point)."""
        from torch.utils.tensorboard.summary import hparams

        settings = result.info.settings
        values = {
            "platform": result.info.problem["platform"],
            "algorithm": result.info.algorithm,
            "objectives": list(result.objectives),
            "constraints": result.info.problem["constraints"],
            "bit_choices": list(result.info.problem["space"]["choices"]),
            "budget": settings.budget,
            "seed": settings.seed,
            "workers": settings.workers,
            "racing": settings.racing,
        }
        metrics = {
            "hp_metric": result.hypervolume,
            "search/front_size": float(len(result.front)),
        }
        if self.best is not None:
            metrics["search/best_error"] = self.best
        if result.test_errors:
            metrics["search/best_test_error"] = min(result.test_errors.values())
        experiment, start, end = hparams({k: _hparam(v) for k, v in values.items()}, metrics)
        file_writer = self.writer._get_file_writer()  # as Lightning's TensorBoardLogger does
        for summary in (experiment, start, end):
            file_writer.add_summary(summary)
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, len(result.records))

    def teardown(self) -> None:
        if self.owned and self.writer is not None:
            self.writer.close()
        self.writer = None
