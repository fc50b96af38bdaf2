"""The beacon stage's report: both fronts in ``fronts.png`` and one table in
``beacon_summary.md``.

Error gain of a solution = its error minus the float model's error. For each
solution of the inference-only front, the table gives the best error the
beacon front reaches at equal or better cost (every cost objective no worse),
both gains and the reduction of the gain (percentage points), as MOHAQ
reports it; plus the hypervolume of both fronts against one reference point.
A beacon-front solution is credited to a beacon only where that beacon's
retrained weights gave it a lower error than post-training quantization of the
float weights (the evaluator keeps the lower of the two: ``beacon_error`` and
``beacon_inference_error`` in the record's extras); both errors are in their
own columns. Bits are printed in the workload's point order, which the table
names. Each beacon's training curves are in its retraining run's TensorBoard folder
(``beacons/<id>/tensorboard``). Beacons that were not retrained (failed for
good, or interrupted) get their own section at the top of the summary and a red
cross with their id and status in every panel of the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mohaq.beacons.evaluator import bits_key
from mohaq.beacons.store import DONE, INTERRUPTED, Beacon, BeaconStore
from mohaq.search.objectives import ERROR
from mohaq.search.pareto import hypervolume
from mohaq.search.plots import (
    BOUND_COLOR,
    FRONT_COLOR,
    Label,
    PlotContext,
    baseline_labels,
    draw_guides,
    figure_grid,
    finish,
    focus_window,
    front_line,
    legend_handle,
    place_labels,
    scatter_clipped,
    value,
)
from mohaq.search.records import EvaluationRecord
from mohaq.search.report import front_of, markdown_table

INFERENCE_COLOR = "tab:blue"

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

    @property
    def credited_beacon(self) -> str | None:
        """The beacon whose retrained weights gave the beacon-front error, or None."""
        return None if self.beacon is None else credited_beacon(self.beacon)


def credited_beacon(record: EvaluationRecord) -> str | None:
    """The id of the beacon whose retrained weights lowered ``record``'s error
    below post-training quantization of the float weights; None when its error
    is the PTQ one (no beacon near, or the beacon's weights did no better)."""
    if not record.evaluator.startswith("beacon:"):
        return None
    retrained = record.extras.get("beacon_error")
    ptq = record.extras.get("beacon_inference_error")
    if retrained is None or ptq is None or not retrained < ptq:
        return None
    return record.evaluator.split(":", 1)[1]


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
    inference_records: list[EvaluationRecord] = field(default_factory=list)
    beacon_records: list[EvaluationRecord] = field(default_factory=list)

    @property
    def max_reduction(self) -> float | None:
        reductions = [r.reduction for r in self.rows if r.reduction is not None]
        return max(reductions) if reductions else None

    @property
    def max_credited_reduction(self) -> float | None:
        """The largest reduction whose beacon-front error came from a beacon's weights."""
        reductions = [
            r.reduction for r in self.rows if r.reduction is not None and r.credited_beacon
        ]
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
        inference_records=list(inference_records),
        beacon_records=list(beacon_records),
    )


def _fallback_context(comparison: FrontComparison) -> PlotContext:
    """Objectives and float error of the comparison; maximized objectives read
    from the records' losses (a maximized objective is stored negated)."""
    records = comparison.inference_front + comparison.beacon_front
    maximized = {
        name
        for i, name in enumerate(comparison.objectives)
        if any(r.losses[i] == -r.objectives[name] != 0 for r in records)
    }
    return PlotContext(
        objectives=comparison.objectives,
        maximized=frozenset(maximized),
        float_error=comparison.float_error,
    )


def fronts_figure(
    comparison: FrontComparison,
    beacons: Sequence[Beacon],
    records: Sequence[EvaluationRecord] = (),
    context: PlotContext | None = None,
) -> Any:
    """Both fronts in each panel of the search's objective pairs: the
    inference-only front, the beacon-based front, each beacon once (a star
    where the beacon-aware search scored it, an arrow from its inference-only
    error), beacons that were not retrained (a red cross with id and status),
    the uniform baselines, the float error and the constraint bounds.

    Args:
        comparison: both fronts (:func:`compare_fronts`).
        beacons: every beacon's state.
        records: where beacons that were not retrained were evaluated (default:
            both stages' records of the comparison).
        context: platform, labels, bounds and warnings (default: the
            comparison's objectives and float error).
    """
    context = context or _fallback_context(comparison)
    if context.float_error is None:
        context = replace(context, float_error=comparison.float_error)
    every = list(records) or comparison.inference_records + comparison.beacon_records
    fronts = comparison.inference_front + comparison.beacon_front
    baselines = [r for r in comparison.inference_records if r.origin == "baseline"]
    window = focus_window(context, fronts, fronts + baselines + [r for r in every if r.feasible])
    stars = _beacon_positions(beacons, comparison)
    panels = context.panels()
    figure, axes = figure_grid(len(panels))
    two = len(context.objectives) == 2
    for axis, (x, y) in zip(axes, panels, strict=True):
        for front, color, marker in (
            (comparison.inference_front, INFERENCE_COLOR, "o"),
            (comparison.beacon_front, FRONT_COLOR, "^"),
        ):
            if two and y == ERROR:
                front_line(axis, window, x, y, front, x in context.maximized, color=color,
                           linewidth=1.2, alpha=0.8, zorder=3)  # fmt: skip
            scatter_clipped(axis, window, x, y, front, s=30, marker=marker, color=color, zorder=4)
        scatter_clipped(axis, window, x, y, baselines, s=60, marker="s", facecolors="none",
                        edgecolors="black", zorder=5)  # fmt: skip
        labels = baseline_labels(window, x, y, baselines, context)
        for beacon_id, before, after in stars:
            bx, _ = window.clip(x, value(after, x))
            by, _ = window.clip(y, value(after, y))
            if before is not None:
                ax_, _ = window.clip(x, value(before, x))
                ay_, _ = window.clip(y, value(before, y))
                if (ax_, ay_) != (bx, by):
                    axis.annotate("", (bx, by), xytext=(ax_, ay_), zorder=5,
                                  arrowprops={"arrowstyle": "->", "color": "goldenrod",
                                              "linewidth": 1.0})  # fmt: skip
            axis.scatter([bx], [by], marker="*", s=170, color="gold", edgecolors="black",
                         zorder=6)  # fmt: skip
            labels.append(Label(bx, by, beacon_id, color="saddlebrown"))
        for beacon, record in _not_retrained(beacons, every):
            px, _ = window.clip(x, value(record, x))
            py, _ = window.clip(y, value(record, y))
            axis.scatter([px], [py], marker="X", s=120, color="tab:red", zorder=6)
            labels.append(Label(px, py, f"{beacon.id} {beacon.status}", color="tab:red"))
        draw_guides(axis, context, window, x, y)
        place_labels(axis, labels)
        if len(context.objectives) > 2:
            axis.set_title(f"{y} vs {x} (projection)", fontsize=9)
    handles = [
        legend_handle("marker", "inference-only front", marker="o", color=INFERENCE_COLOR),
        legend_handle("marker", "beacon-based front", marker="^", color=FRONT_COLOR),
    ]
    if stars:
        handles.append(legend_handle("marker", "beacon (arrow: from its inference-only error)",
                                     marker="*", color="gold", markeredgecolor="black",
                                     markersize=11))  # fmt: skip
    if baselines:
        handles.append(legend_handle("marker", "uniform baseline", marker="s",
                                     markerfacecolor="none", color="black"))  # fmt: skip
    if _not_retrained(beacons, every):
        handles.append(legend_handle("marker", "beacon not retrained", marker="X",
                                     color="tab:red"))  # fmt: skip
    handles.append(legend_handle("line", "float model", linestyle="--", color="dimgray"))
    if any(b.metric in context.objectives for b in context.bounds):
        handles.append(legend_handle("line", "constraint", linestyle=":", color=BOUND_COLOR))
    problems = [f"{b.id} ({b.status})" for b in beacons if b.status != DONE]
    if problems:
        context = replace(
            context,
            warnings=(f"{len(problems)} beacon(s) not retrained: " + ", ".join(problems),
                      *context.warnings),
        )  # fmt: skip
    done = sum(b.status == DONE for b in beacons)
    title = (
        f"{context.platform or 'beacon stage'}: inference-only vs beacon-based front \u2014 "
        f"{done} of {len(beacons)} beacons retrained"
    )
    finish(figure, context, window, title, handles)
    return figure


def _beacon_positions(
    beacons: Sequence[Beacon], comparison: FrontComparison
) -> list[tuple[str, EvaluationRecord | None, EvaluationRecord]]:
    """``(id, inference-only record, where to draw it)`` of each retrained
    beacon, once: where the beacon-aware search scored its bits with its own
    weights, else (never scored there) its inference-only record."""
    inference = {bits_key(r.bits): r for r in reversed(comparison.inference_records)}
    out = []
    for beacon in beacons:
        if beacon.status != DONE:
            continue
        key = bits_key(beacon.bits)
        own = next(
            (
                r
                for r in comparison.beacon_records
                if r.evaluator == f"beacon:{beacon.id}" and bits_key(r.bits) == key
            ),
            None,
        )
        before = inference.get(key)
        if own is not None:
            out.append((beacon.id, before, own))
        elif before is not None:
            out.append((beacon.id, None, before))
    return out


def _not_retrained(
    beacons: Sequence[Beacon], records: Sequence[EvaluationRecord]
) -> list[tuple[Beacon, EvaluationRecord]]:
    """Each beacon that was not retrained, with the record where it was evaluated."""
    by_bits = {bits_key(r.bits): r for r in records}
    return [
        (b, by_bits[bits_key(b.bits)])
        for b in beacons
        if b.status != DONE and bits_key(b.bits) in by_bits
    ]


def _pp(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _error_source(record: EvaluationRecord) -> str:
    """Which weights gave a beacon-aware record its error."""
    beacon = credited_beacon(record)
    if beacon is not None:
        return f"beacon {beacon}"
    if record.evaluator.startswith("beacon:"):
        return f"PTQ ({record.evaluator.split(':', 1)[1]} not lower)"
    return "PTQ"


def _beacon_errors(
    beacons: Sequence[Beacon], records: Sequence[EvaluationRecord]
) -> dict[str, float]:
    """Beacon id -> the error of its own bits with its retrained weights, from
    the beacon-aware search's records."""
    out: dict[str, float] = {}
    by_bits = {bits_key(b.bits): b.id for b in beacons}
    for record in records:
        beacon_id = by_bits.get(bits_key(record.bits))
        retrained = record.extras.get("beacon_error")
        if (
            beacon_id is not None
            and retrained is not None
            and record.evaluator == f"beacon:{beacon_id}"
        ):
            out.setdefault(beacon_id, float(retrained))
    return out


def _bits_in_order(bits: dict[str, int], points: Sequence[str]) -> str:
    order = list(points) or sorted(bits)
    return " ".join(str(bits[p]) if p in bits else "-" for p in order)


def _one_line(text: str, limit: int = 100) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.replace("|", "/")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def write_beacon_summary(
    path: Path,
    comparison: FrontComparison,
    beacons: Sequence[Beacon],
    *,
    settings: dict[str, Any],
    files: dict[str, Path],
    points: Sequence[str] = (),
) -> None:
    """``beacon_summary.md``: settings, both fronts at matched cost, the beacons.

    Args:
        points: the workload's point order, in which bits are printed (default:
            the points' names sorted, which the table then says).
    """
    costs = [o for o in comparison.objectives if o != ERROR]
    ref = dict(zip(comparison.objectives, [round(x, 6) for x in comparison.reference], strict=True))
    best = comparison.max_reduction
    credited = comparison.max_credited_reduction
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
        "- largest such reduction where a beacon's retrained weights gave the error: "
        + ("none" if credited is None else f"{100 * credited:.2f} percentage points"),
        "",
        "## Both fronts at matched cost",
        "",
        "For each inference-only front solution: the beacon front's best error at equal or "
        "better cost. Gain = error - float error, in percentage points; reduction = "
        'inference-only gain - beacon gain. "error from" credits a beacon only where its '
        "retrained weights gave a lower error than post-training quantization (PTQ) of the "
        "float weights; both errors are in their own columns.",
        "",
    ]
    rows = [
        [
            "inference index",
            *costs,
            "inference-only error",
            "gain (pp)",
            "beacon-front index",
            *[f"{c} (beacon front)" for c in costs],
            "beacon-front error",
            "gain (pp)",
            "reduction (pp)",
            "error from",
            "PTQ error",
            "retrained-weights error",
        ]
    ]
    for row in comparison.rows:
        b = row.beacon
        rows.append(
            [
                str(row.inference.index),
                *[f"{row.inference.objectives[c]:.4g}" for c in costs],
                _percent(row.inference.error),
                _pp(row.inference_gain),
                "" if b is None else str(b.index),
                *["" if b is None else f"{b.objectives[c]:.4g}" for c in costs],
                "" if b is None else _percent(b.error),
                _pp(row.beacon_gain),
                _pp(row.reduction),
                "" if b is None else _error_source(b),
                "" if b is None else _percent(b.extras.get("beacon_inference_error")),
                "" if b is None else _percent(b.extras.get("beacon_error")),
            ]
        )
    order = list(points) or sorted({p for b in beacons for p in b.bits})
    lines += [
        markdown_table(rows),
        "",
        "## Beacons",
        "",
        f"Bits in point order: {', '.join(order)}",
        "",
    ]
    retrained = _beacon_errors(beacons, comparison.beacon_records)
    beacon_rows = [
        [
            "id",
            "origin",
            "status",
            "attempts",
            "interruptions",
            "bits",
            "PTQ error (inference-only)",
            "retrained-weights error",
            "val/per after QAT",
            "failure or interruption",
        ]
    ]
    for beacon in beacons:
        per = beacon.metrics.get("val/per")
        beacon_rows.append(
            [
                beacon.id,
                beacon.origin,
                beacon.status,
                str(beacon.attempts),
                str(len(beacon.interruptions)),
                _bits_in_order(beacon.bits, order),
                _percent(beacon.source_error),
                _percent(retrained.get(beacon.id)),
                _percent(per),
                "" if beacon.status == DONE else _one_line(beacon.last_problem),
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
    points: Sequence[str] = (),
    context: PlotContext | None = None,
) -> dict[str, Path]:
    """Writes ``fronts.png`` and ``beacon_summary.md`` into ``run_dir``; returns all files.

    Args:
        run_dir: the inference-only run directory.
        comparison: both fronts.
        settings: lines of the summary's settings section.
        files: other outputs to list.
        records: both stages' evaluations (where beacons not retrained are
            marked; default: the comparison's).
        points: the workload's point order for the bits.
        context: platform, labels, bounds of the plot.
    """
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    beacons = BeaconStore(run_dir).beacons()
    out = dict(files or {})
    out["fronts_png"] = run_dir / FRONTS_PNG
    out["beacon_summary"] = run_dir / BEACON_SUMMARY
    out["beacons"] = BeaconStore(run_dir).root
    figure = fronts_figure(comparison, beacons, records, context)
    figure.savefig(out["fronts_png"], dpi=120)
    plt.close(figure)
    write_beacon_summary(
        out["beacon_summary"], comparison, beacons, settings=settings, files=out, points=points
    )
    return out
