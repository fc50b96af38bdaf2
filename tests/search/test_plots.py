"""pareto.png: axes on the front and the feasible points near it, outliers at
the edge, float error and bounds drawn, baselines labelled apart, platform and
metric references in the labels; a 3-objective search gets pairwise panels."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pytest

from mohaq.hardware import load_platform
from mohaq.search.plots import (
    Bound,
    PlotContext,
    focus_window,
    metric_label,
    pareto_figure,
)
from mohaq.search.records import EvaluationRecord


def record(index: int, speedup: float, error: float, **fields) -> EvaluationRecord:
    values = {"error": error, "speedup": speedup}
    return EvaluationRecord(
        index=index, bits={"w": 8}, genes=[], objectives=values, losses=[error, -speedup],
        metrics={"speedup": speedup, "memory_mb": 1.0}, error=error,
        feasible=fields.pop("feasible", True), **fields,
    )  # fmt: skip


# Shaped like the quickstart on Bit Fusion: uniform 2 bits is 64x faster at 336% error.
BASELINES = [
    record(0, 1.0, 0.415, origin="baseline", label="uniform-16", feasible=False),
    record(1, 4.0, 0.416, origin="baseline", label="uniform-8", feasible=False),
    record(2, 16.0, 0.545, origin="baseline", label="uniform-4"),
    record(3, 64.0, 3.36, origin="baseline", label="uniform-2", feasible=False),
]
FRONT = [record(4, 2.4, 0.414), record(5, 5.0, 0.42), record(6, 11.7, 0.51), BASELINES[2]]
OTHERS = [
    record(7, 3.0, 0.48),
    record(8, 20.0, 2.2, feasible=False),
    record(9, 6.0, 0.47, fidelity=0.25),  # stopped early by racing
]
RECORDS = [*BASELINES, *FRONT[:3], *OTHERS]
CONTEXT = PlotContext(
    objectives=("error", "speedup"),
    maximized=frozenset({"speedup"}),
    platform="bitfusion_mohaq",
    labels={"speedup": "speedup (x vs uniform 16-bit)"},
    bounds=(Bound("error", "<=", 0.6), Bound("memory_mb", "<=", 0.15)),
    float_error=0.412,
)


def test_the_window_holds_the_front_the_float_error_and_the_bound_not_the_outliers() -> None:
    window = focus_window(CONTEXT, FRONT, RECORDS)
    low, high = window.ranges["error"]
    # From the float error (41.2%) to the bound (60%; under the cap of 2 x 41.2%), padded.
    span = 60.0 - 41.2
    assert low == pytest.approx(41.2 - 0.08 * span)
    assert high == pytest.approx(60.0 + 0.12 * span)
    # Speedups of what lies under that error: 1 (uniform-16) to 16 (uniform-4), padded;
    # not uniform-2's 64.
    low, high = window.ranges["speedup"]
    assert low == pytest.approx(1.0 - 0.06 * 15) and high == pytest.approx(16.0 + 0.08 * 15)
    assert window.clip("error", 336.0) == (pytest.approx(60.0 + 0.12 * span), 1)


def test_the_figure_labels_baselines_apart_and_draws_float_and_bounds() -> None:
    figure = pareto_figure(RECORDS, FRONT, CONTEXT)
    try:
        axis = figure.axes[0]
        texts = {t.get_text(): t for t in axis.texts}
        assert {"uniform-16", "uniform-8", "uniform-4"} <= set(texts)
        assert "uniform-2 (speedup 64, 336%)" in texts  # beyond the axes: its real values
        assert "float 41.2%" in texts and "error \u2264 60%" in texts
        renderer = figure.canvas.get_renderer()
        boxes = [
            texts[name].get_window_extent(renderer)
            for name in ("uniform-16", "uniform-8", "uniform-4", "uniform-2 (speedup 64, 336%)")
        ]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)
        assert figure.get_suptitle().startswith("bitfusion_mohaq: error vs speedup")
        assert "also constrained: memory_mb \u2264 0.15" in figure.get_suptitle()
        assert axis.get_xlabel().startswith("speedup (x vs uniform 16-bit)")
        assert "\u2192 better" in axis.get_xlabel()
        assert "lower is better" in axis.get_ylabel()
        legend = [t.get_text() for t in figure.legends[0].get_texts()]
        for entry in ("Pareto front", "infeasible", "stopped early (racing)", "float model",
                      "constraint", "uniform baseline", "beyond the axes (at the edge)"):  # fmt: skip
            assert entry in legend
    finally:
        plt.close(figure)


def test_three_objectives_get_pairwise_projections() -> None:
    context = PlotContext(
        objectives=("error", "speedup", "energy"), maximized=frozenset({"speedup"})
    )
    records = [
        EvaluationRecord(
            index=i,
            bits={"w": b},
            genes=[],
            objectives={"error": e, "speedup": 16 / b, "energy": b},
            losses=[e, -16 / b, b],
            metrics={"speedup": 16 / b, "energy": b},
            error=e,
            feasible=True,
        )  # fmt: skip
        for i, (b, e) in enumerate([(16, 0.2), (8, 0.25), (4, 0.4)])
    ]
    assert context.panels() == [("speedup", "error"), ("energy", "error"), ("speedup", "energy")]
    figure = pareto_figure(records, records, context)
    try:
        titles = [a.get_title() for a in figure.axes if a.get_visible()]
        assert titles == [
            "error vs speedup (projection)",
            "error vs energy (projection)",
            "energy vs speedup (projection)",
        ]
    finally:
        plt.close(figure)


def test_axis_labels_come_from_the_cost_models_description() -> None:
    silago = load_platform("silago")
    assert metric_label(silago, "speedup") == (
        "speedup (x vs uniform 16-bit; physical: total time at 16 bits / total time)"
    )
    assert metric_label(silago, "speedup_mohaq") == (
        "speedup_mohaq (MOHAQ's MAC-weighted mean of the per-layer speedups)"
    )
    context = PlotContext.from_problem(
        {"objectives": ["error", "speedup"], "maximized": ["speedup"], "platform": "silago",
         "constraints": ["error <= 0.3", "memory_bytes <= 1000"]},
        cost_model=silago,
    )  # fmt: skip
    assert context.bounds == (Bound("error", "<=", 0.3), Bound("memory_bytes", "<=", 1000.0))
    assert context.label("speedup").startswith("speedup (x vs uniform 16-bit")
