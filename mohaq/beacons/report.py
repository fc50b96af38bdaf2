"""The beacon stage's report: both fronts in ``fronts.png`` and one table in
``beacon_summary.md``.

Error gain of a solution = its error minus the float model's error. For each
solution of the inference-only front, the table gives the best error the
beacon front reaches at equal or better cost (every cost objective no worse),
both gains and the reduction of the gain (percentage points), as MOHAQ
reports it; plus the hypervolume of both fronts against one reference point.
Each beacon's training curves are in its retraining run's TensorBoard folder
(``beacons/<id>/tensorboard``). Beacons that were not retrained (failed for
good, or interrupted) get their own section at the top of the summary and a red
cross with their id and status in every panel of the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mohaq.beacons.store import DONE, INTERRUPTED, Beacon, BeaconStore
from mohaq.search.objectives import ERROR
from mohaq.search.pareto import hypervolume
from mohaq.search.records import EvaluationRecord
from mohaq.search.report import front_of, markdown_table

FRONTS_PNG = "fronts.png"
BEACON_SUMMARY = "beacon_summary.md"


@dataclass(frozen=True)
class MatchedCost:
    """One inference-only front solution and the beacon front's best answer at
    equal or better cost (None when the beacon front has no such solution)."""

    inference: EvaluationRecord
    beacon: EvaluationRecord | None
    inference_gain: float
    beacon_gain: float | None

    @property
    def reduction(self) -> float | None:
        return None if self.beacon_gain is None else self.inference_gain - self.beacon_gain


@dataclass
class FrontComparison:
    """Both fronts, their hypervolumes and the matched-cost rows."""

    objectives: tuple[str, ...]
    reference: list[float]
    float_error: float
    inference_front: list[EvaluationRecord]
    beacon_front: list[EvaluationRecord]
    inference_hypervolume: float
    beacon_hypervolume: float
    rows: list[MatchedCost] = field(default_factory=list)

    @property
    def max_reduction(self) -> float | None:
        reductions = [r.reduction for r in self.rows if r.reduction is not None]
        return max(reductions) if reductions else None


def beacon_problems(beacons: Sequence[Beacon]) -> list[str]:
    """One line per beacon that was not retrained: id, status, attempts and why."""
    lines = []
    for beacon in beacons:
        if beacon.status == DONE:
            continue
        if beacon.status == INTERRUPTED:
            what = (
                f"{beacon.id} was interrupted ({beacon.last_problem}); resume the stage "
                "(--resume true) to retrain it"
            )
        else:
            what = (
                f"{beacon.id} {beacon.status} after {beacon.attempts} attempt(s): "
                f"{beacon.last_problem or 'no error recorded'}"
            )
        lines.append(what)
    return lines


def _cost_indices(objectives: Sequence[str]) -> list[int]:
    return [i for i, name in enumerate(objectives) if name != ERROR]


def compare_fronts(
    inference_records: Sequence[EvaluationRecord],
    beacon_records: Sequence[EvaluationRecord],
    *,
    objectives: Sequence[str],
    reference: Sequence[float],
    float_error: float,
) -> FrontComparison:
    """Feasible fronts of both stages, matched by cost (see the module docstring)."""
    inference_front = sorted(front_of(inference_records), key=lambda r: (r.error, r.index))
    beacon_front = sorted(front_of(beacon_records), key=lambda r: (r.error, r.index))
    costs = _cost_indices(objectives)
    rows = []
    for record in inference_front:
        matches = [
            b for b in beacon_front if all(b.losses[i] <= record.losses[i] + 1e-12 for i in costs)
        ]
        best = min(matches, key=lambda r: (r.error, r.index)) if matches else None
        rows.append(
            MatchedCost(
                inference=record,
                beacon=best,
                inference_gain=record.error - float_error,
                beacon_gain=None if best is None else best.error - float_error,
            )
        )
    return FrontComparison(
        objectives=tuple(objectives),
        reference=list(reference),
        float_error=float(float_error),
        inference_front=inference_front,
        beacon_front=beacon_front,
        inference_hypervolume=hypervolume([r.losses for r in inference_front], reference),
        beacon_hypervolume=hypervolume([r.losses for r in beacon_front], reference),
        rows=rows,
    )


def fronts_figure(
    comparison: FrontComparison,
    beacons: Sequence[Beacon],
    records: Sequence[EvaluationRecord] = (),
) -> Any:
    """Error against each cost objective: the inference-only front, the
    beacon-based front, the beacons (at their inference-only error), beacons
    that were not retrained (a red cross at their record in ``records``) and
    the float error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = [o for o in comparison.objectives if o != ERROR]
    figure, axes = plt.subplots(1, len(costs), figsize=(5.8 * len(costs), 4.4), squeeze=False)
    beacon_bits = {tuple(sorted(b.bits.items())): b for b in beacons}
    for axis, cost in zip(axes[0], costs, strict=True):
        for front, style, label in (
            (
                comparison.inference_front,
                dict(color="tab:blue", marker="o"),
                "inference-only front",
            ),
            (comparison.beacon_front, dict(color="tab:red", marker="^"), "beacon-based front"),
        ):
            ordered = sorted(front, key=lambda r: r.objectives[cost])
            axis.plot(
                [r.objectives[cost] for r in ordered],
                [100 * r.error for r in ordered],
                drawstyle="steps-post",
                linewidth=1.2,
                markersize=5,
                label=label,
                **style,
            )
        marked = False
        for record in comparison.inference_front + comparison.beacon_front:
            beacon = beacon_bits.get(tuple(sorted(record.bits.items())))
            if beacon is None:
                continue
            axis.scatter(
                [record.objectives[cost]],
                [100 * record.error],
                marker="*",
                s=160,
                color="gold",
                edgecolors="black",
                zorder=5,
                label=None if marked else "beacon",
            )
            axis.annotate(beacon.id, (record.objectives[cost], 100 * record.error), fontsize=8,
                          xytext=(5, 5), textcoords="offset points")  # fmt: skip
            marked = True
        _mark_problems(axis, cost, beacons, records)
        axis.axhline(100 * comparison.float_error, color="gray", linestyle="--", linewidth=1,
                     label="float")  # fmt: skip
        axis.set_xlabel(cost)
        axis.set_ylabel("error on the optimization set (%)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    problems = beacon_problems(beacons)
    if problems:
        figure.suptitle(
            f"{len(problems)} beacon(s) not retrained: "
            + ", ".join(f"{b.id} ({b.status})" for b in beacons if b.status != DONE),
            color="tab:red",
            fontsize=10,
        )
    figure.tight_layout()
    return figure


def _mark_problems(
    axis: Any, cost: str, beacons: Sequence[Beacon], records: Sequence[EvaluationRecord]
) -> None:
    """A red cross with id and status where each beacon that was not retrained was evaluated."""
    by_bits = {tuple(sorted(r.bits.items())): r for r in records}
    marked = False
    for beacon in beacons:
        record = by_bits.get(tuple(sorted(beacon.bits.items())))
        if beacon.status == DONE or record is None:
            continue
        x, y = record.objectives[cost], 100 * record.error
        axis.scatter([x], [y], marker="X", s=120, color="tab:red", zorder=6,
                     label=None if marked else "beacon not retrained")  # fmt: skip
        axis.annotate(f"{beacon.id} {beacon.status}", (x, y), fontsize=8, color="tab:red",
                      xytext=(5, -12), textcoords="offset points")  # fmt: skip
        marked = True


def _pp(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}"


def write_beacon_summary(
    path: Path,
    comparison: FrontComparison,
    beacons: Sequence[Beacon],
    *,
    settings: dict[str, Any],
    files: dict[str, Path],
) -> None:
    costs = [o for o in comparison.objectives if o != ERROR]
    ref = dict(zip(comparison.objectives, [round(x, 6) for x in comparison.reference], strict=True))
    best = comparison.max_reduction
    problems = beacon_problems(beacons)
    warning = []
    if problems:
        warning = [
            "## Beacons that were not retrained",
            "",
            "Candidates near them kept their inference-only error.",
            "",
            *[f"- **{line}**" for line in problems],
            "",
        ]
    lines = [
        "# MOHAQ beacon-based search",
        "",
        *warning,
        "## Settings",
        "",
        *[f"- {key}: {value}" for key, value in settings.items()],
        "",
        "## Result",
        "",
        f"- float error (optimization set): {100 * comparison.float_error:.2f}%",
        f"- inference-only front: {len(comparison.inference_front)} solutions, "
        f"hypervolume {comparison.inference_hypervolume:.6g}",
        f"- beacon-based front: {len(comparison.beacon_front)} solutions, "
        f"hypervolume {comparison.beacon_hypervolume:.6g}",
        f"- hypervolume reference (losses; maximized objectives negated): {ref}",
        "- largest reduction of the error gain at matched cost: "
        + ("n/a" if best is None else f"{100 * best:.2f} percentage points"),
        "",
        "## Both fronts at matched cost",
        "",
        "For each inference-only front solution: the beacon front's best error at equal or "
        "better cost. Gain = error - float error, in percentage points; reduction = "
        "inference-only gain - beacon gain.",
        "",
    ]
    rows = [
        [
            "inference index",
            *costs,
            "inference-only error",
            "gain (pp)",
            "beacon-front index",
            *[f"{c} (beacon)" for c in costs],
            "beacon-front error",
            "gain (pp)",
            "reduction (pp)",
            "scored by",
        ]
    ]
    for row in comparison.rows:
        b = row.beacon
        rows.append(
            [
                str(row.inference.index),
                *[f"{row.inference.objectives[c]:.4g}" for c in costs],
                f"{100 * row.inference.error:.2f}%",
                _pp(row.inference_gain),
                "" if b is None else str(b.index),
                *["" if b is None else f"{b.objectives[c]:.4g}" for c in costs],
                "" if b is None else f"{100 * b.error:.2f}%",
                _pp(row.beacon_gain),
                _pp(row.reduction),
                "" if b is None else b.evaluator,
            ]
        )
    lines += [markdown_table(rows), "", "## Beacons", ""]
    beacon_rows = [
        [
            "id",
            "origin",
            "status",
            "attempts",
            "interruptions",
            "bits",
            "source error",
            "val/per after QAT",
            "last error or interruption",
        ]
    ]
    for beacon in beacons:
        source = "" if beacon.source_error is None else f"{100 * beacon.source_error:.2f}%"
        per = beacon.metrics.get("val/per")
        beacon_rows.append(
            [
                beacon.id,
                beacon.origin,
                beacon.status,
                str(beacon.attempts),
                str(len(beacon.interruptions)),
                " ".join(str(v) for v in beacon.bits.values()),
                source,
                "" if per is None else f"{100 * per:.2f}%",
                beacon.last_problem[:80].replace("|", "/"),
            ]
        )
    lines += [
        markdown_table(beacon_rows),
        "",
        "Training curves: TensorBoard in each `beacons/<id>/tensorboard` folder.",
        "",
        "## Files",
        "",
    ]
    for name, file in sorted(files.items()):
        lines.append(f"- {name}: `{file}`")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_beacon_report(
    run_dir: str | Path,
    comparison: FrontComparison,
    *,
    settings: dict[str, Any],
    files: dict[str, Path] | None = None,
    records: Sequence[EvaluationRecord] = (),
) -> dict[str, Path]:
    """Writes ``fronts.png`` and ``beacon_summary.md`` into ``run_dir``; returns all files.

    ``records`` (both stages' evaluations) place beacons that were not retrained in the plot.
    """
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    beacons = BeaconStore(run_dir).beacons()
    out = dict(files or {})
    out["fronts_png"] = run_dir / FRONTS_PNG
    out["beacon_summary"] = run_dir / BEACON_SUMMARY
    out["beacons"] = BeaconStore(run_dir).root
    figure = fronts_figure(comparison, beacons, records)
    figure.savefig(out["fronts_png"], dpi=120)
    plt.close(figure)
    write_beacon_summary(out["beacon_summary"], comparison, beacons, settings=settings, files=out)
    return out
