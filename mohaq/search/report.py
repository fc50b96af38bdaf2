"""What a search leaves behind: pareto.csv, pareto.png and summary.md (the
:class:`ReportWriter` callback); plus a hypervolume comparison of two runs
(e.g. an algorithm against random search at equal budget)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mohaq.search.callbacks import SearchCallback
from mohaq.search.objectives import ERROR
from mohaq.search.pareto import hypervolume, pareto_indices
from mohaq.search.plots import PlotContext, pareto_figure
from mohaq.search.records import (
    EVALUATIONS,
    SETTINGS,
    TEST_ERRORS,
    EvaluationLog,
    EvaluationRecord,
    StoredRun,
)

TENSORBOARD = "tensorboard"  # where the search's TensorBoard callback writes by default
PARETO_CSV = "pareto.csv"
PARETO_PNG = "pareto.png"
SUMMARY = "summary.md"


def front_of(records: Sequence[EvaluationRecord]) -> list[EvaluationRecord]:
    """The feasible, full-fidelity, non-dominated records of a log (equal
    losses: the first)."""
    feasible = [r for r in records if r.feasible and r.fidelity >= 1.0]
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


def plot_context(result: Any) -> PlotContext:
    """What the plots of a search's result show beyond its records: platform,
    axis labels from its cost model, constraints, float error, warnings."""
    problem = result.info.problem
    return PlotContext.from_problem(
        problem,
        cost_model=platform_model(result.info.settings, problem["platform"]),
        float_error=result.float_error,
        warnings=result.warnings,
    )


def platform_model(settings: Any, name: str) -> Any:
    """The settings' cost model if it is the platform ``name`` (for labels), else None."""
    from mohaq.hardware.base import CostModelError
    from mohaq.search.run import resolve_cost_model

    try:
        model = resolve_cost_model(settings)
    except CostModelError:
        return None
    return model if model.name == name else None


#: The checks of what post-training quantization must keep (MOHAQ's claims on
#: TIMIT, issue 12): row label -> the most its error may exceed the float
#: model's, in percentage points.
ERROR_BUDGETS_PP: dict[str, float] = {"uniform-8": 0.5, "W4A8": 1.0, "uniform-4": 3.0}
SPEEDUP = "speedup"


@dataclass(frozen=True)
class Check:
    """One line of the summary's quantization checks.

    Attributes:
        name: what is checked.
        passed: whether it holds (None: it cannot be checked in this run).
        detail: the measured values.
    """

    name: str
    passed: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "yes", False: "**no**", None: "n/a"}[self.passed]
        return f"- {self.name}: {mark} ({self.detail})"


def _by_label(result: Any) -> dict[str, EvaluationRecord]:
    rows = [*result.baselines, *result.role_rows]
    return {r.label: r for r in rows}


def quantization_checks(result: Any) -> list[Check]:
    """Whether the search's PTQ keeps accuracy (:data:`ERROR_BUDGETS_PP` over
    the float error) and whether mixed precision beats uniform-4: a feasible
    front point with lower error than uniform-4 at equal or higher speedup."""
    if result.float_error is None:
        return []
    rows = _by_label(result)
    checks = []
    for label, budget in ERROR_BUDGETS_PP.items():
        name = f"{label} within {budget:g} pp of float"
        row = rows.get(label)
        if row is None:
            checks.append(Check(name, None, f"{label} not scored in this run"))
            continue
        gap = 100 * (row.error - result.float_error)
        checks.append(
            Check(
                name,
                gap <= budget,
                f"{100 * row.error:.2f}% vs {100 * result.float_error:.2f}%: {gap:+.2f} pp",
            )
        )
    name = "a front point with lower error than uniform-4 at equal or higher speedup"
    uniform4 = rows.get("uniform-4")
    if uniform4 is None or SPEEDUP not in uniform4.objectives:
        checks.append(Check(name, None, "needs a uniform-4 baseline and the speedup objective"))
        return checks
    better = [
        r
        for r in result.front
        if r.error < uniform4.error and r.objectives[SPEEDUP] >= uniform4.objectives[SPEEDUP]
    ]
    limits = [c for c in result.info.problem["constraints"] if "memory" in str(c)]
    context = f"; memory limit on: {', '.join(map(str, limits))}" if limits else ""
    if better:
        best = min(better, key=lambda r: r.error)
        detail = (
            f"#{best.index}: {100 * best.error:.2f}% at speedup {best.objectives[SPEEDUP]:.3g} "
            f"vs uniform-4 {100 * uniform4.error:.2f}% at {uniform4.objectives[SPEEDUP]:.3g}"
        )
    else:
        detail = f"uniform-4: {100 * uniform4.error:.2f}% at {uniform4.objectives[SPEEDUP]:.3g}"
    checks.append(Check(name, bool(better), detail + context))
    return checks


def markdown_table(rows: list[list[str]]) -> str:
    """A Markdown table; ``rows[0]`` is the header."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def write_summary(path: Path, result: Any) -> None:
    """``summary.md``: settings, counts, hypervolume, baselines, the front, files."""
    info = result.info
    problem = info.problem
    settings = info.settings
    objectives = list(result.objectives)
    extra = [o for o in objectives if o != ERROR]
    space = problem["space"]
    genes = len(space["genes"])
    feasible = sum(r.feasible for r in result.records)
    partial = [r for r in result.records if r.fidelity < 1.0]
    shared = (
        " (weights share their input activation precision)"
        if space["shared_layer_precision"]
        else ""
    )
    algorithm = settings.algorithm_options.to_dict()
    options = ", ".join(f"{k}={v}" for k, v in algorithm.items())
    warnings = [f"- **{w}**" for w in result.warnings]
    lines = [
        "# MOHAQ search summary",
        "",
        *(["## Warnings", "", *warnings, ""] if warnings else []),
        "## Settings",
        "",
        f"- platform: {problem['platform']}",
        f"- post-training quantization: {settings.ptq_options().tag()} "
        f"(preset {settings.ptq!r}{f', overrides {settings.ptq_overrides}' if settings.ptq_overrides else ''})",
        f"- objectives: {', '.join(objectives)} (maximized: {', '.join(problem['maximized']) or 'none'})",
        f"- constraints: {', '.join(problem['constraints']) or 'none'}",
        f"- bit choices: {space['choices']}; genes: {genes}{shared}; search space: "
        f"{len(space['choices']) ** genes} assignments",
        f"- algorithm: {info.algorithm}{f' ({options})' if options else ''}; seed {settings.seed}; "
        f"budget {settings.budget}; workers {settings.workers}",
        "",
        "## Counts",
        "",
        f"- evaluations: {len(result.records)} ({feasible} feasible, {len(result.records) - feasible} infeasible)",
        f"- Pareto front: {len(result.front)} solutions",
    ]
    if result.float_error is not None:
        lines.append(f"- float model error (optimization set): {100 * result.float_error:.2f}%")
    if settings.racing:
        shares = [r.fidelity for r in result.records]
        lines.append(
            f"- racing: {len(partial)} candidates stopped early (confidently dominated), "
            f"mean share of the optimization set evaluated per candidate "
            f"{100 * sum(shares) / max(len(shares), 1):.0f}%"
        )
    if result.stopped_early:
        lines.append(f"- stopped before the budget: {result.stopped_early}")
    lines += [
        "",
        "## Hypervolume",
        "",
        f"- {result.hypervolume:.6g}, against the fixed reference point (losses; maximized "
        f"objectives negated) {dict(zip(objectives, [round(x, 6) for x in result.reference], strict=True))}",
        "",
        "## Float and uniform rows",
        "",
        "uniform-N: every point at N bits; WxAy: every weight at x bits, every activation at y "
        "(not searched, not in the front).",
        "",
    ]
    rows = [["row", *extra, "error (opt. set)", "vs float", "feasible"]]
    if result.float_error is not None:
        rows.append(["float", *["" for _ in extra], f"{100 * result.float_error:.2f}%", "", ""])
    for r in [*result.baselines, *result.role_rows]:
        gap = (
            "" if result.float_error is None else f"{100 * (r.error - result.float_error):+.2f} pp"
        )
        rows.append(
            [
                r.label,
                *[f"{r.objectives[o]:.4g}" for o in extra],
                f"{100 * r.error:.2f}%",
                gap,
                "yes" if r.feasible else "no: " + "; ".join(r.violations),
            ]
        )
    checks = quantization_checks(result)
    lines += [markdown_table(rows), ""]
    if checks:
        lines += ["## Quantization checks", "", *[c.line() for c in checks], ""]
    lines += [
        "## Pareto front",
        "",
        f"Bits in point order: {', '.join(info.points)}",
        "",
    ]
    rows = [["index", "bits", *extra, "error (opt. set)", "error (test)"]]
    for r in result.front:
        test = result.test_errors.get(r.index)
        rows.append(
            [
                str(r.index),
                " ".join(str(r.bits[p]) for p in info.points),
                *[f"{r.objectives[o]:.4g}" for o in extra],
                f"{100 * r.error:.2f}%",
                "" if test is None else f"{100 * test:.2f}%",
            ]
        )
    lines += [markdown_table(rows), "", "## Files", ""]
    for name, file in sorted(result.files.items()):
        lines.append(f"- {name}: `{file}`")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class ReportWriter(SearchCallback):
    """Writes ``pareto.csv``, ``pareto.png`` and ``summary.md`` into the run directory."""

    def on_search_end(self, result: Any) -> None:
        import matplotlib.pyplot as plt

        run_dir = Path(result.run_dir)
        files = result.files
        files.update(
            {
                "evaluations": run_dir / EVALUATIONS,
                "pareto_csv": run_dir / PARETO_CSV,
                "pareto_png": run_dir / PARETO_PNG,
                "summary": run_dir / SUMMARY,
                "settings": run_dir / SETTINGS,
            }
        )
        if (run_dir / TEST_ERRORS).exists():
            files["test_errors"] = run_dir / TEST_ERRORS
        if (run_dir / TENSORBOARD).is_dir():
            files.setdefault("tensorboard", run_dir / TENSORBOARD)
        write_pareto_csv(
            files["pareto_csv"],
            result.front,
            result.info.points,
            result.objectives,
            result.test_errors,
        )
        figure = pareto_figure(result.records, result.front, plot_context(result))
        figure.savefig(files["pareto_png"], dpi=120)
        plt.close(figure)
        write_summary(files["summary"], result)


def compare_hypervolumes(
    run_a: str | Path, run_b: str | Path, reference: Sequence[float] | None = None
) -> dict[str, Any]:
    """Hypervolumes of two runs' feasible fronts against one reference point
    (run A's recorded reference unless given), e.g. DE against random search
    at equal budget.

    Raises:
        ValueError: if the runs have different objectives.
    """
    stored = [StoredRun.read(run) for run in (run_a, run_b)]
    objectives = [s.problem["objectives"] for s in stored]
    if objectives[0] != objectives[1]:
        raise ValueError(f"runs have different objectives: {objectives[0]} vs {objectives[1]}")
    ref = list(reference) if reference is not None else stored[0].problem["reference"]
    out: dict[str, Any] = {"reference": ref, "objectives": objectives[0]}
    for key, run, setting in (("a", run_a, stored[0]), ("b", run_b, stored[1])):
        records = EvaluationLog(run).read()  # a reader: never cuts a running search's log
        front = front_of(records)
        out[key] = {
            "run_dir": str(run),
            "algorithm": setting.settings["algorithm"]["name"],
            "algorithm_options": setting.settings["algorithm"]["options"],
            "evaluations": len(records),
            "front_size": len(front),
            "hypervolume": hypervolume([r.losses for r in front], ref),
        }
    return out
