"""What a search leaves behind: pareto.csv, pareto.png, summary.md,
TensorBoard entries and a progress bar; plus a hypervolume comparison of two
runs (e.g. an optimizer against random search at equal budget)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mohaq.search.objectives import ERROR
from mohaq.search.pareto import hypervolume, pareto_indices
from mohaq.search.persistence import SETTINGS, EvaluationLog, EvaluationRecord

PARETO_CSV = "pareto.csv"
PARETO_PNG = "pareto.png"
SUMMARY = "summary.md"
TENSORBOARD = "tensorboard"


def front_of(records: Sequence[EvaluationRecord]) -> list[EvaluationRecord]:
    feasible = [r for r in records if r.feasible]
    return [feasible[i] for i in pareto_indices([r.losses for r in feasible])]


def write_pareto_csv(
    path: Path,
    front: Sequence[EvaluationRecord],
    points: Sequence[str],
    objectives: Sequence[str],
    test_errors: dict[int, float],
) -> None:
    """One row per front solution: bits per point, objectives, errors."""
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        extra = [o for o in objectives if o != ERROR]
        writer.writerow(
            [
                "index",
                "label",
                *[f"bits:{p}" for p in points],
                *extra,
                "optimization_error",
                "test_error",
            ]
        )
        for r in front:
            test = test_errors.get(r.index)
            writer.writerow(
                [
                    r.index,
                    r.label,
                    *[r.bits[p] for p in points],
                    *[f"{r.objectives[o]:.6g}" for o in extra],
                    f"{r.error:.6f}",
                    "" if test is None else f"{test:.6f}",
                ]
            )


def pareto_figure(
    records: Sequence[EvaluationRecord],
    front: Sequence[EvaluationRecord],
    objectives: Sequence[str],
) -> Any:
    """Error against each cost objective: all evaluations faint, infeasible
    crossed, the front highlighted, the uniform baselines labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = [o for o in objectives if o != ERROR] or [ERROR]
    figure, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4.2), squeeze=False)
    feasible = [r for r in records if r.feasible]
    infeasible = [r for r in records if not r.feasible]
    ordered = sorted(front, key=lambda r: r.objectives.get(costs[0], 0.0))
    for axis, cost in zip(axes[0], costs, strict=True):
        axis.scatter(
            [r.objectives[cost] for r in feasible],
            [100 * r.error for r in feasible],
            s=12,
            alpha=0.25,
            color="tab:blue",
            label="evaluated",
        )
        if infeasible:
            axis.scatter(
                [r.objectives[cost] for r in infeasible],
                [100 * r.error for r in infeasible],
                s=12,
                alpha=0.25,
                marker="x",
                color="tab:gray",
                label="infeasible",
            )
        axis.scatter(
            [r.objectives[cost] for r in ordered],
            [100 * r.error for r in ordered],
            s=36,
            color="tab:red",
            zorder=3,
            label="Pareto front",
        )
        for r in records:
            if r.origin == "baseline":
                axis.scatter(
                    [r.objectives[cost]],
                    [100 * r.error],
                    marker="s",
                    s=50,
                    facecolors="none",
                    edgecolors="black",
                    zorder=4,
                )
                axis.annotate(
                    r.label,
                    (r.objectives[cost], 100 * r.error),
                    fontsize=8,
                    xytext=(4, 4),
                    textcoords="offset points",
                )
        axis.set_xlabel(cost)
        axis.set_ylabel("error on the optimization set (%)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _bits_text(record: EvaluationRecord) -> str:
    return " ".join(str(b) for b in record.bits.values())


def write_summary(path: Path, controller: Any, result: Any) -> None:
    objectives = list(result.objectives)
    extra = [o for o in objectives if o != ERROR]
    settings = controller.settings()
    feasible = sum(r.feasible for r in result.records)
    lines = [
        "# MOHAQ search summary",
        "",
        "## Settings",
        "",
        f"- platform: {settings['platform']}",
        f"- objectives: {', '.join(objectives)} (maximized: {', '.join(settings['maximized']) or 'none'})",
        f"- constraints: {', '.join(settings['constraints']) or 'none'}",
        f"- bit choices: {settings['space']['choices']}; genes: {controller.space.num_genes}"
        f"{' (weights share their input activation precision)' if controller.space.shared_layer_precision else ''};"
        f" search space: {controller.space.size} assignments",
        f"- optimizer: {result.optimizer}; seed {settings['seed']}; budget {settings['budget']}; workers {settings['workers']}",
        "",
        "## Counts",
        "",
        f"- evaluations: {len(result.records)} ({feasible} feasible, {len(result.records) - feasible} infeasible)",
        f"- Pareto front: {len(result.front)} solutions",
    ]
    if result.stopped_early:
        lines.append(f"- stopped before the budget: {result.stopped_early}")
    lines += [
        "",
        "## Hypervolume",
        "",
        f"- {result.hypervolume:.6g}, against the fixed reference point (losses; maximized "
        f"objectives negated) {dict(zip(objectives, [round(x, 6) for x in result.reference], strict=True))}",
        "",
        "## Uniform baselines",
        "",
    ]
    rows = [["baseline", *extra, "error (opt. set)", "feasible"]]
    for r in result.baselines:
        rows.append(
            [
                r.label,
                *[f"{r.objectives[o]:.4g}" for o in extra],
                f"{100 * r.error:.2f}%",
                "yes" if r.feasible else "no: " + "; ".join(r.violations),
            ]
        )
    lines += [
        _table(rows),
        "",
        "## Pareto front",
        "",
        f"Bits in point order: {', '.join(controller.workload.names)}",
        "",
    ]
    rows = [["index", "bits", *extra, "error (opt. set)", "error (test)"]]
    for r in result.front:
        test = result.test_errors.get(r.index)
        rows.append(
            [
                str(r.index),
                _bits_text(r),
                *[f"{r.objectives[o]:.4g}" for o in extra],
                f"{100 * r.error:.2f}%",
                "" if test is None else f"{100 * test:.2f}%",
            ]
        )
    lines += [_table(rows), "", "## Files", ""]
    for name, file in sorted(result.files.items()):
        lines.append(f"- {name}: `{file}`")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class SearchReporter:
    """Progress bar and TensorBoard during a search; report files at the end."""

    def __init__(self, controller: Any, *, resumed: int = 0) -> None:
        self.controller = controller
        self.writer = self._writer(controller.logger, controller.run_dir)
        self.bar = None
        if controller.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=controller.budget, initial=resumed, desc="search", unit="eval")
        self._best: float | None = None

    @staticmethod
    def _writer(logger: Any, run_dir: Path) -> Any:
        if logger is False:
            return None
        if logger is None:
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(log_dir=str(run_dir / TENSORBOARD))
        experiment = getattr(logger, "experiment", logger)
        return experiment if hasattr(experiment, "add_scalar") else None

    def evaluated(self, record: EvaluationRecord, records: Sequence[EvaluationRecord]) -> None:
        if record.feasible and (self._best is None or record.error < self._best):
            self._best = record.error
        count = len(records)
        if self.bar is not None:
            self.bar.update(1)
            postfix = {"front": len(front_of(records))}
            if self._best is not None:
                postfix["best_error"] = f"{100 * self._best:.2f}%"
            self.bar.set_postfix(postfix)
        if self.writer is not None:
            self.writer.add_scalar("search/error", record.error, record.index)
            if count % self.controller.report_every == 0:
                front = front_of(records)
                hv = hypervolume([r.losses for r in front], self.controller.reference)
                self.writer.add_scalar("search/hypervolume", hv, count)
                self.writer.add_scalar("search/front_size", len(front), count)

    def finish(self, result: Any) -> dict[str, Path]:
        run_dir = Path(result.run_dir)
        files = {
            "evaluations": run_dir / "evaluations.jsonl",
            "pareto_csv": run_dir / PARETO_CSV,
            "pareto_png": run_dir / PARETO_PNG,
            "summary": run_dir / SUMMARY,
            "settings": run_dir / SETTINGS,
        }
        if (run_dir / "test_errors.json").exists():
            files["test_errors"] = run_dir / "test_errors.json"
        write_pareto_csv(
            files["pareto_csv"],
            result.front,
            self.controller.workload.names,
            result.objectives,
            result.test_errors,
        )
        import matplotlib.pyplot as plt

        figure = pareto_figure(result.records, result.front, result.objectives)
        figure.savefig(files["pareto_png"], dpi=120)
        if self.writer is not None:
            files["tensorboard"] = Path(getattr(self.writer, "log_dir", run_dir / TENSORBOARD))
            count = len(result.records)
            self.writer.add_scalar("search/hypervolume", result.hypervolume, count)
            self.writer.add_figure("search/pareto", figure, count)
            for r in result.front:
                hparams = {f"bits/{k}": v for k, v in r.bits.items()}
                metrics = {f"front/{k}": float(v) for k, v in r.objectives.items()}
                if r.index in result.test_errors:
                    metrics["front/test_error"] = result.test_errors[r.index]
                self.writer.add_hparams(hparams, metrics, run_name=f"front_{r.index}")
            self.writer.flush()
        plt.close(figure)
        result.files = files
        write_summary(files["summary"], self.controller, result)
        return files

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None and self.controller.logger is None:
            self.writer.close()
            self.writer = None


def compare_hypervolumes(
    run_a: str | Path, run_b: str | Path, reference: Sequence[float] | None = None
) -> dict[str, Any]:
    """Hypervolumes of two runs' feasible fronts against one reference point
    (run A's recorded reference unless given), e.g. DE against RandomSearch
    at equal budget.

    Raises:
        ValueError: if the runs have different objectives.
    """
    settings = [json.loads((Path(r) / SETTINGS).read_text()) for r in (run_a, run_b)]
    if settings[0]["objectives"] != settings[1]["objectives"]:
        raise ValueError(
            f"runs have different objectives: {settings[0]['objectives']} vs {settings[1]['objectives']}"
        )
    ref = list(reference) if reference is not None else settings[0]["reference"]
    out: dict[str, Any] = {"reference": ref, "objectives": settings[0]["objectives"]}
    for key, run, setting in (("a", run_a, settings[0]), ("b", run_b, settings[1])):
        records = EvaluationLog(run).load()
        front = front_of(records)
        out[key] = {
            "run_dir": str(run),
            "optimizer": setting["optimizer"],
            "evaluations": len(records),
            "front_size": len(front),
            "hypervolume": hypervolume([r.losses for r in front], ref),
        }
    return out
