"""Figures of a search a person reads at a glance: ``pareto.png`` here, and the
pieces ``fronts.png`` of the beacon stage is drawn with.

Each panel plots two objectives (error against each cost; every pair when a
search has three or more objectives). The axes are scaled to the front and the
feasible evaluations near it: a point beyond them (uniform 2 bits at 300%
error, say) is drawn at the edge as a hollow arrowhead pointing where it lies,
and a baseline there keeps its label with its real values. The float model's
error and the constraint bounds are drawn as lines; the uniform baselines are
labelled without overlapping; the title names the platform, and each cost axis
says what its metric measures and against what ("x vs uniform 16-bit"). A
corner arrow shows which way is better.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mohaq.search.objectives import ERROR
from mohaq.search.records import EvaluationRecord

ERROR_LABEL = "error on the optimization set (%)"
_BOUND = re.compile(r"^(?P<metric>\S+)\s*(?P<op><=|>=)\s*(?P<value>\S+)$")

FRONT_COLOR = "tab:red"
EVALUATED_COLOR = "tab:blue"
BOUND_COLOR = "tab:purple"


@dataclass(frozen=True)
class Bound:
    """A constraint ``metric op value`` in the metric's units (error as a fraction)."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Bound | None:
        """From a stored constraint (``"error <= 0.6"``); None if it is not one."""
        match = _BOUND.match(str(text).strip())
        if match is None:
            return None
        try:
            return cls(match["metric"], match["op"], float(match["value"]))
        except ValueError:
            return None

    def describe(self) -> str:
        sign = "\u2264" if self.op == "<=" else "\u2265"
        value = f"{100 * self.value:g}%" if self.metric == ERROR else f"{self.value:g}"
        return f"{self.metric} {sign} {value}"


def metric_label(cost_model: Any, metric: str) -> str:
    """An axis label from the cost model: the metric, its unit and its reference,
    e.g. ``speedup (x vs uniform 16-bit; physical: total time at 16 bits / total time)``."""
    description = str(getattr(cost_model, "metric_descriptions", {}).get(metric, ""))
    unit = str(getattr(cost_model, "units", {}).get(metric, ""))
    baseline = getattr(cost_model, "baseline_bits", None)
    parts = []
    if "baseline precision" in description and baseline is not None:
        parts.append(f"x vs uniform {baseline}-bit")
        description = description.replace("the baseline precision", f"{baseline} bits")
    elif unit:
        parts.append(unit)
    if description:
        parts.append(description)
    return f"{metric} ({'; '.join(parts)})" if parts else metric


@dataclass(frozen=True)
class PlotContext:
    """What a figure needs to know beyond the records.

    Attributes:
        objectives: the search's objectives, ``error`` first or not.
        maximized: objectives where higher is better.
        platform: the platform's name, for the title.
        labels: objective -> axis label (default: its name).
        bounds: the search's constraints.
        float_error: the float model's error on the optimization set.
        warnings: what a reader must know (drawn in red under the title).
    """

    objectives: tuple[str, ...]
    maximized: frozenset[str] = frozenset()
    platform: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    bounds: tuple[Bound, ...] = ()
    float_error: float | None = None
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_problem(
        cls,
        problem: Mapping[str, Any],
        *,
        cost_model: Any = None,
        float_error: float | None = None,
        warnings: Sequence[str] = (),
    ) -> PlotContext:
        """From a stored problem (``SearchProblem.describe()``); ``cost_model``
        (when it is the problem's platform) gives the axis labels."""
        objectives = tuple(problem["objectives"])
        labels = {ERROR: ERROR_LABEL}
        if cost_model is not None:
            for name in objectives:
                if name != ERROR and name in getattr(cost_model, "metric_names", ()):
                    labels[name] = metric_label(cost_model, name)
        bounds = tuple(b for b in map(Bound.parse, problem.get("constraints", [])) if b)
        return cls(
            objectives=objectives,
            maximized=frozenset(problem.get("maximized", ())),
            platform=str(problem.get("platform", "")),
            labels=labels,
            bounds=bounds,
            float_error=float_error,
            warnings=tuple(warnings),
        )

    def label(self, objective: str) -> str:
        if objective == ERROR:
            return self.labels.get(ERROR, ERROR_LABEL)
        return self.labels.get(objective, objective)

    def panels(self) -> list[tuple[str, str]]:
        """``(x, y)`` objective pairs: error (y) against each cost; with three or
        more objectives, every pair of costs too."""
        costs = [o for o in self.objectives if o != ERROR]
        if ERROR not in self.objectives:
            return list(itertools.combinations(costs, 2)) or [(costs[0], costs[0])]
        pairs = [(cost, ERROR) for cost in costs]
        if len(self.objectives) > 2:
            pairs += list(itertools.combinations(costs, 2))
        return pairs or [(ERROR, ERROR)]

    def unmapped_bounds(self) -> list[Bound]:
        """Constraints on metrics that are not plotted (listed in the title)."""
        return [b for b in self.bounds if b.metric not in self.objectives]

    def hidden_bounds(self, window: Window) -> list[str]:
        """Constraints the panels cannot show: on metrics not plotted, or off the axes."""
        shown = [b.describe() for b in self.unmapped_bounds()]
        for bound in self.bounds:
            if bound.metric in window.ranges:
                lo, hi = window.ranges[bound.metric]
                if not lo <= plotted_bound(bound) <= hi:
                    shown.append(f"{bound.describe()} (off the axes)")
        return shown


def value(record: EvaluationRecord, name: str) -> float:
    """A record's plotted value: the error in percent, a metric as it is."""
    if name == ERROR:
        return 100.0 * record.error
    if name in record.objectives:
        return float(record.objectives[name])
    return float(record.metrics.get(name, math.nan))


def plotted_bound(bound: Bound) -> float:
    return 100.0 * bound.value if bound.metric == ERROR else bound.value


# -- axis ranges ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """The visible range of each objective."""

    ranges: Mapping[str, tuple[float, float]]

    def clip(self, name: str, v: float) -> tuple[float, int]:
        """``(v within the range, -1 below / 0 inside / +1 above)``."""
        lo, hi = self.ranges[name]
        if v < lo:
            return lo, -1
        if v > hi:
            return hi, 1
        return v, 0


def error_cap(best: float) -> float:
    """The highest error (%) worth an axis: twice the best, and at least 20 points above it."""
    return max(2.0 * best, best + 20.0)


def focus_window(
    context: PlotContext,
    front: Sequence[EvaluationRecord],
    records: Sequence[EvaluationRecord],
) -> Window:
    """Axis ranges around the front and the feasible evaluations near it.

    The error axis runs from the best of (front, feasible, float error and
    baselines not far below them) to the front's worst error, capped at
    :func:`error_cap`, and stretched to show the error bound when it lies
    under the cap. The other axes span the front,
    the feasible evaluations and the baselines whose error is on the axis, and
    the bounds near them.
    """
    full = [r for r in records if r.fidelity >= 1.0]
    feasible = [r for r in full if r.feasible]
    anchor = list(front) or feasible or full or list(records)
    ranges: dict[str, tuple[float, float]] = {}
    error_hi = math.inf
    if ERROR in context.objectives:
        best = min(value(r, ERROR) for r in anchor + feasible)
        cap = error_cap(best)
        # Below the front: the float line and the baselines (uniform 16 bits, often
        # infeasible), when they are as near the front as the cap is.
        floor = 2 * best - cap
        below = [value(r, ERROR) for r in full if r.origin == "baseline"]
        if context.float_error is not None:
            below.append(100.0 * context.float_error)
        best = min([best, *(v for v in below if v >= floor)])
        top = min(max(value(r, ERROR) for r in anchor), cap)
        for bound in context.bounds:
            if bound.metric == ERROR and plotted_bound(bound) <= cap:
                top = max(top, plotted_bound(bound))
        top = max(top, best + 2.0)
        span = top - best
        ranges[ERROR] = (max(0.0, best - 0.08 * span), top + 0.12 * span)
        error_hi = ranges[ERROR][1]
    near = [r for r in anchor + feasible if value(r, ERROR) <= error_hi] or anchor
    near += [r for r in full if r.origin == "baseline" and value(r, ERROR) <= error_hi]
    for name in context.objectives:
        if name == ERROR:
            continue
        values = [v for v in (value(r, name) for r in near) if math.isfinite(v)] or [0.0, 1.0]
        lo, hi = min(values), max(values)
        span = max(hi - lo, abs(hi) * 0.05, 1e-9)
        for bound in context.bounds:
            if bound.metric == name and lo - span <= bound.value <= hi + span:
                lo, hi = min(lo, bound.value), max(hi, bound.value)
        span = max(hi - lo, abs(hi) * 0.05, 1e-9)
        ranges[name] = (lo - 0.06 * span, hi + 0.08 * span)
    return Window(ranges)


# -- drawing helpers ------------------------------------------------------------------------
_EDGE_MARKERS = {(0, 1): "^", (0, -1): "v", (1, 0): ">", (-1, 0): "<"}


def _edge_marker(dx: int, dy: int) -> str:
    if dy:
        return _EDGE_MARKERS[(0, dy)]
    return _EDGE_MARKERS[(dx, 0)]


def scatter_clipped(
    axis: Any,
    window: Window,
    x: str,
    y: str,
    records: Iterable[EvaluationRecord],
    **style: Any,
) -> int:
    """Scatters records; those beyond the window go to its edge as hollow
    arrowheads pointing outwards. Returns how many were beyond it."""
    inside_x, inside_y, edge = [], [], []
    for r in records:
        cx, dx = window.clip(x, value(r, x))
        cy, dy = window.clip(y, value(r, y))
        if dx or dy:
            edge.append((cx, cy, _edge_marker(dx, dy)))
        else:
            inside_x.append(cx)
            inside_y.append(cy)
    axis.scatter(inside_x, inside_y, **style)
    color = style.get("color", style.get("c", "gray"))
    for cx, cy, marker in edge:
        axis.scatter([cx], [cy], marker=marker, s=40, facecolors="none", edgecolors=color,
                     linewidths=1.0, clip_on=False, zorder=style.get("zorder", 2))  # fmt: skip
    return len(edge)


def front_line(
    axis: Any,
    window: Window,
    x: str,
    y: str,
    front: Sequence[EvaluationRecord],
    maximize_x: bool,
    **style: Any,
) -> None:
    """The attainment staircase of a two-objective front (error against one cost)."""
    ordered = sorted(front, key=lambda r: value(r, x))
    xs = [window.clip(x, value(r, x))[0] for r in ordered]
    ys = [window.clip(y, value(r, y))[0] for r in ordered]
    axis.plot(xs, ys, drawstyle="steps-pre" if maximize_x else "steps-post", **style)


def draw_guides(axis: Any, context: PlotContext, window: Window, x: str, y: str) -> None:
    """Float error line, constraint bounds (the infeasible side shaded), limits
    and labels saying which way is better."""
    for name, horizontal in ((y, True), (x, False)):
        lo, hi = window.ranges[name]
        if name == ERROR and context.float_error is not None:
            level = 100.0 * context.float_error
            if lo <= level <= hi:
                line = axis.axhline if horizontal else axis.axvline
                line(level, color="dimgray", linestyle="--", linewidth=1.0, zorder=1)
                axis.annotate(f"float {level:.1f}%", (1.0, level) if horizontal else (level, 1.0),
                              xycoords=("axes fraction", "data") if horizontal else ("data", "axes fraction"),
                              xytext=(-3, 3), textcoords="offset points", ha="right", va="bottom",
                              fontsize=8, color="dimgray")  # fmt: skip
        for bound in context.bounds:
            if bound.metric != name:
                continue
            level = plotted_bound(bound)
            if not lo <= level <= hi:
                continue
            outside = (level, hi) if bound.op == "<=" else (lo, level)
            if horizontal:
                axis.axhline(level, color=BOUND_COLOR, linestyle=":", linewidth=1.2, zorder=1)
                axis.axhspan(*outside, color=BOUND_COLOR, alpha=0.06, zorder=0)
                axis.annotate(bound.describe(), (0.0, level), xycoords=("axes fraction", "data"),
                              xytext=(3, 3), textcoords="offset points", fontsize=8,
                              color=BOUND_COLOR)  # fmt: skip
            else:
                axis.axvline(level, color=BOUND_COLOR, linestyle=":", linewidth=1.2, zorder=1)
                axis.axvspan(*outside, color=BOUND_COLOR, alpha=0.06, zorder=0)
                axis.annotate(bound.describe(), (level, 1.0), xycoords=("data", "axes fraction"),
                              xytext=(3, -10), textcoords="offset points", fontsize=8,
                              color=BOUND_COLOR, rotation=0)  # fmt: skip
    axis.set_xlim(*window.ranges[x])
    axis.set_ylim(*window.ranges[y])
    axis.set_xlabel(_better(context, x, horizontal=True), fontsize=9)
    axis.set_ylabel(_better(context, y, horizontal=False), fontsize=9)
    axis.grid(alpha=0.3)


def _better(context: PlotContext, name: str, *, horizontal: bool) -> str:
    """The axis label with the direction that is better."""
    higher = name in context.maximized
    if horizontal:
        arrow = "\u2192 better" if higher else "\u2190 better"
        return f"{context.label(name)}   {arrow}"
    return f"{context.label(name)}, {'higher' if higher else 'lower'} is better"


@dataclass(frozen=True)
class Label:
    """A text to place next to a data point."""

    x: float
    y: float
    text: str
    color: str = "black"


#: Offsets (points) tried in turn for a label; the first free one is taken.
_OFFSETS = ((6, 5), (6, -13), (-6, 5), (-6, -13), (6, 17), (6, -25), (-6, 17), (-6, -25),
            (6, 29), (6, -37), (-6, 29), (-6, -37))  # fmt: skip


def place_labels(axis: Any, labels: Sequence[Label], fontsize: int = 8) -> list[Any]:
    """Annotates each point with its text where it overlaps no label placed
    before (nor the axes' edge, when it can avoid it); returns the texts."""
    figure = axis.figure
    renderer = figure.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    placed: list[Any] = []
    texts = []
    for label in sorted(labels, key=lambda lab: (lab.x, lab.y)):
        chosen = None
        for dx, dy in _OFFSETS:
            text = axis.annotate(label.text, (label.x, label.y), xytext=(dx, dy),
                                 textcoords="offset points", fontsize=fontsize, color=label.color,
                                 ha="left" if dx > 0 else "right", va="bottom", zorder=6,
                                 annotation_clip=False)  # fmt: skip
            box = text.get_window_extent(renderer)
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                      and box.y1 <= frame.y1)  # fmt: skip
            if inside and not any(box.overlaps(other) for other in placed):
                chosen = (text, box)
                break
            text.remove()
        if chosen is None:  # crowded: the first offset, overlapping
            dx, dy = _OFFSETS[0]
            text = axis.annotate(label.text, (label.x, label.y), xytext=(dx, dy),
                                 textcoords="offset points", fontsize=fontsize, color=label.color,
                                 zorder=6, annotation_clip=False)  # fmt: skip
            chosen = (text, text.get_window_extent(renderer))
        placed.append(chosen[1])
        texts.append(chosen[0])
    return texts


def baseline_labels(
    window: Window, x: str, y: str, baselines: Iterable[EvaluationRecord], context: PlotContext
) -> list[Label]:
    """A label per uniform baseline; one beyond the axes says its real values."""
    labels = []
    for r in baselines:
        vx, vy = value(r, x), value(r, y)
        cx, dx = window.clip(x, vx)
        cy, dy = window.clip(y, vy)
        text = r.label or f"#{r.index}"
        if dx or dy:
            text += f" ({_short(x, vx)}, {_short(y, vy)})"
        labels.append(Label(cx, cy, text))
    return labels


def _short(name: str, v: float) -> str:
    return f"{v:.0f}%" if name == ERROR else f"{name} {v:.3g}"


def figure_grid(panels: int) -> tuple[Any, list[Any]]:
    """A figure with one axis per panel (up to three per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    width = 7.6 if panels == 1 else 5.4 * columns
    figure, axes = plt.subplots(rows, columns, figsize=(width, 5.0 * rows + 0.6), squeeze=False)
    flat = [a for row in axes for a in row]
    for extra in flat[panels:]:
        extra.set_visible(False)
    return figure, flat[:panels]


def finish(
    figure: Any, context: PlotContext, window: Window, title: str, handles: Sequence[Any]
) -> None:
    """Title (platform and what the figure shows), constraints the panels do not
    show, the warnings in red under it and one legend under the panels."""
    lines = [title]
    hidden = context.hidden_bounds(window)
    if hidden:
        lines.append("also constrained: " + ", ".join(hidden))
    figure.suptitle("\n".join(lines), fontsize=11)
    columns = max(1, min(len(handles), 4))
    figure.legend(handles=list(handles), loc="lower center", ncol=columns, fontsize=8,
                  frameon=False)  # fmt: skip
    height = figure.get_figheight()
    rows = math.ceil(len(handles) / columns)
    figure.tight_layout(rect=(0, (0.2 * rows + 0.1) / height, 1, 1))
    if context.warnings:
        renderer = figure.canvas.get_renderer()
        below = figure.transFigure.inverted().transform(
            (0, figure._suptitle.get_window_extent(renderer).y0)
        )[1]
        more = f" (+{len(context.warnings) - 1} more)" if len(context.warnings) > 1 else ""
        figure.text(0.5, below - 0.01, f"warning: {context.warnings[0]}{more}", ha="center",
                    va="top", color="tab:red", fontsize=9)  # fmt: skip
        figure.subplots_adjust(top=figure.subplotpars.top - 0.3 / height)


def legend_handle(kind: str, label: str, **style: Any) -> Any:
    from matplotlib.lines import Line2D

    if kind == "line":
        return Line2D([], [], label=label, **style)
    return Line2D([], [], linestyle="none", label=label, **style)


# -- pareto.png -----------------------------------------------------------------------------
def pareto_figure(
    records: Sequence[EvaluationRecord],
    front: Sequence[EvaluationRecord],
    context: PlotContext,
) -> Any:
    """Every evaluation (infeasible crossed, stopped-early hollow), the front
    highlighted, the uniform baselines labelled, float error and bounds drawn;
    one panel per objective pair (see the module docstring)."""
    window = focus_window(context, front, records)
    full = [r for r in records if r.fidelity >= 1.0]
    partial = [r for r in records if r.fidelity < 1.0]
    feasible = [r for r in full if r.feasible and r.origin != "baseline"]
    infeasible = [r for r in full if not r.feasible and r.origin != "baseline"]
    baselines = [r for r in full if r.origin == "baseline"]
    panels = context.panels()
    figure, axes = figure_grid(len(panels))
    beyond = 0
    for axis, (x, y) in zip(axes, panels, strict=True):
        beyond += scatter_clipped(axis, window, x, y, feasible, s=14, alpha=0.35,
                                  color=EVALUATED_COLOR, zorder=2)  # fmt: skip
        beyond += scatter_clipped(axis, window, x, y, infeasible, s=14, alpha=0.35, marker="x",
                                  color="gray", zorder=2)  # fmt: skip
        beyond += scatter_clipped(axis, window, x, y, partial, s=14, alpha=0.5,
                                  facecolors="none", edgecolors="tab:olive", zorder=2)  # fmt: skip
        if y == ERROR and len(context.objectives) == 2:
            front_line(axis, window, x, y, front, x in context.maximized, color=FRONT_COLOR,
                       linewidth=1.0, alpha=0.6, zorder=3)  # fmt: skip
        beyond += scatter_clipped(axis, window, x, y, front, s=40, color=FRONT_COLOR, zorder=4)
        beyond += scatter_clipped(axis, window, x, y, baselines, s=60, marker="s",
                                  facecolors="none", edgecolors="black", zorder=5)  # fmt: skip
        draw_guides(axis, context, window, x, y)
        place_labels(axis, baseline_labels(window, x, y, baselines, context))
        if len(context.objectives) > 2:
            axis.set_title(f"{y} vs {x} (projection)", fontsize=9)
    handles = [
        legend_handle("marker", "Pareto front", marker="o", color=FRONT_COLOR),
        legend_handle("marker", "feasible", marker="o", color=EVALUATED_COLOR, alpha=0.5),
    ]
    if infeasible:
        handles.append(legend_handle("marker", "infeasible", marker="x", color="gray"))
    if partial:
        handles.append(legend_handle("marker", "stopped early (racing)", marker="o",
                                     markerfacecolor="none", color="tab:olive"))  # fmt: skip
    if baselines:
        handles.append(legend_handle("marker", "uniform baseline", marker="s",
                                     markerfacecolor="none", color="black"))  # fmt: skip
    if context.float_error is not None and ERROR in context.objectives:
        handles.append(legend_handle("line", "float model", linestyle="--", color="dimgray"))
    if any(b.metric in context.objectives for b in context.bounds):
        handles.append(legend_handle("line", "constraint", linestyle=":", color=BOUND_COLOR))
    if beyond:
        handles.append(legend_handle("marker", "beyond the axes (at the edge)", marker="^",
                                     markerfacecolor="none", color="gray"))  # fmt: skip
    shown = " vs ".join(o for o in context.objectives)
    count = sum(r.feasible for r in full)
    title = (
        f"{context.platform or 'search'}: {shown} \u2014 {len(records)} evaluations "
        f"({count} feasible), Pareto front of {len(front)}"
    )
    finish(figure, context, window, title, handles)
    return figure
