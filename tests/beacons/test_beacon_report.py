"""The beacon report: beacons that were not retrained marked (own summary
section, a red cross in every panel of fronts.png), bits in the workload's
point order, a beacon credited only where its retrained weights lowered the
error, failures in their own column, each beacon drawn once."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from mohaq.beacons.report import (
    beacon_problems,
    compare_fronts,
    credited_beacon,
    fronts_figure,
    write_beacon_summary,
)
from mohaq.beacons.store import Beacon
from mohaq.search.plots import PlotContext, pareto_figure
from mohaq.search.records import EvaluationRecord

# The workload's point order is not alphabetical: a report that sorts names shows "4 16".
POINTS = ("sru0.weight", "output.weight")


def record(
    index: int,
    bits: int,
    error: float,
    *,
    evaluator: str = "ptq",
    extras: dict[str, float] | None = None,
    origin: str = "optimizer",
) -> EvaluationRecord:
    speedup = 16 / bits
    return EvaluationRecord(
        index=index, bits={"output.weight": 4, "sru0.weight": bits}, genes=[],
        objectives={"error": error, "speedup": speedup}, losses=[error, -speedup],
        metrics={"speedup": speedup}, error=error, feasible=True, evaluator=evaluator,
        extras=dict(extras or {}), origin=origin, label=f"uniform-{bits}" if origin == "baseline" else "",
    )  # fmt: skip


def _texts(figure) -> list[str]:
    return [t.get_text() for axis in figure.axes for t in axis.texts] + [
        t.get_text() for t in figure.texts
    ]


def test_beacons_not_retrained_are_marked_in_the_summary_and_every_panel(tmp_path: Path) -> None:
    records = [record(0, 16, 0.1), record(1, 8, 0.2), record(2, 4, 0.4)]
    beacons = [
        Beacon("b000", {"output.weight": 4, "sru0.weight": 16}, status="done", attempts=1),
        Beacon("b001", {"output.weight": 4, "sru0.weight": 8}, status="failed", attempts=2,
               errors=["boom", "TrainingDivergedError: x\n\nTraceback ..."]),
        Beacon("b002", {"output.weight": 4, "sru0.weight": 4}, status="interrupted",
               interruptions=["the beacon stage was killed"]),
    ]  # fmt: skip
    problems = beacon_problems(beacons)
    assert problems == [
        "b001 failed after 2 attempt(s): TrainingDivergedError: x\n\nTraceback ...",
        "b002 was interrupted (the beacon stage was killed); resume the stage (--resume true) "
        "to retrain it",
    ]
    comparison = compare_fronts(
        records, records, objectives=("error", "speedup"), reference=[1.0, 0.0], float_error=0.05
    )
    figure = fronts_figure(comparison, beacons, records)
    try:
        labels = [text.get_text() for text in figure.axes[0].texts]
        assert "b001 failed" in labels and "b002 interrupted" in labels
        assert any(
            "2 beacon(s) not retrained: b001 (failed), b002 (interrupted)" in t
            for t in _texts(figure)
        )
    finally:
        plt.close(figure)
    summary = tmp_path / "beacon_summary.md"
    write_beacon_summary(summary, comparison, beacons, settings={}, files={}, points=POINTS)
    text = summary.read_text()
    assert text.index("## Beacons that were not retrained") < text.index("## Settings")
    assert "- **b001 failed after 2 attempt(s): TrainingDivergedError: x" in text
    # The Beacons table: the failure's first line in its own column, nothing for a done beacon.
    row = next(line for line in text.splitlines() if line.startswith("| b001 |"))
    assert row.endswith("| TrainingDivergedError: x |")
    row = next(line for line in text.splitlines() if line.startswith("| b000 |"))
    assert row.endswith("|  |")


def test_bits_are_printed_in_the_workloads_point_order(tmp_path: Path) -> None:
    records = [record(0, 16, 0.1), record(1, 2, 0.5)]
    # As beacon.json stores them: keys sorted.
    beacons = [Beacon("b000", {"output.weight": 4, "sru0.weight": 16}, status="done")]
    comparison = compare_fronts(
        records, records, objectives=("error", "speedup"), reference=[1.0, 0.0], float_error=0.05
    )
    summary = tmp_path / "beacon_summary.md"
    write_beacon_summary(summary, comparison, beacons, settings={}, files={}, points=POINTS)
    text = summary.read_text()
    assert "Bits in point order: sru0.weight, output.weight" in text
    row = next(line for line in text.splitlines() if line.startswith("| b000 |"))
    assert "| 16 4 |" in row


def test_a_beacon_is_credited_only_where_its_weights_lowered_the_error(tmp_path: Path) -> None:
    inference = [
        record(0, 16, 0.30, origin="baseline"),
        record(1, 8, 0.40),
        record(2, 4, 0.60),
    ]
    lowered = {"beacon_inference_error": 0.40, "beacon_error": 0.33, "beacon_distance": 0.0}
    not_lower = {"beacon_inference_error": 0.60, "beacon_error": 0.70, "beacon_distance": 1.0}
    beacon_search = [
        record(0, 16, 0.30, origin="baseline", extras={"beacon_inference_error": 0.30}),
        record(1, 8, 0.33, evaluator="beacon:b000", extras=lowered),
        # scored near b000, whose weights did worse: the error shown is the PTQ one
        record(2, 4, 0.60, evaluator="beacon:b000", extras=not_lower),
    ]
    assert credited_beacon(beacon_search[1]) == "b000"
    assert credited_beacon(beacon_search[2]) is None
    beacons = [Beacon("b000", {"output.weight": 4, "sru0.weight": 8}, status="done",
                      source_error=0.40, metrics={"val/per": 0.31})]  # fmt: skip
    comparison = compare_fronts(
        inference, beacon_search, objectives=("error", "speedup"), reference=[1.0, 0.0],
        float_error=0.25,
    )  # fmt: skip
    assert [r.credited_beacon for r in comparison.rows] == [None, "b000", None]
    assert comparison.max_reduction == pytest.approx(0.07)
    assert comparison.max_credited_reduction == pytest.approx(0.07)
    summary = tmp_path / "beacon_summary.md"
    write_beacon_summary(summary, comparison, beacons, settings={}, files={}, points=POINTS)
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[1:-1]]
        for line in summary.read_text().splitlines()
        if re.match(r"^\| \d+ \|", line)
    }
    # columns: ... error from | PTQ error | retrained-weights error
    assert rows["1"][-3:] == ["beacon b000", "40.00%", "33.00%"]
    assert rows["2"][-3:] == ["PTQ (b000 not lower)", "60.00%", "70.00%"]
    assert rows["0"][-3:] == ["PTQ", "30.00%", ""]
    beacon_row = next(
        line for line in summary.read_text().splitlines() if line.startswith("| b000 |")
    )
    assert "| 40.00% | 33.00% | 31.00% |" in beacon_row  # PTQ, retrained weights, val/per


def test_each_beacon_is_drawn_once_with_the_baselines() -> None:
    inference = [record(0, 16, 0.30, origin="baseline"), record(1, 8, 0.40), record(2, 4, 0.6)]
    lowered = {"beacon_inference_error": 0.40, "beacon_error": 0.33, "beacon_distance": 0.0}
    beacon_search = [
        record(0, 16, 0.30, origin="baseline"),
        record(1, 8, 0.33, evaluator="beacon:b000", extras=lowered, origin="seed"),
        record(2, 8, 0.33, evaluator="beacon:b000", extras=lowered),  # the same bits again
    ]
    beacons = [Beacon("b000", {"output.weight": 4, "sru0.weight": 8}, status="done")]
    comparison = compare_fronts(
        inference, beacon_search, objectives=("error", "speedup"), reference=[1.0, 0.0],
        float_error=0.25,
    )  # fmt: skip
    figure = fronts_figure(comparison, beacons)
    try:
        labels = [t.get_text() for t in figure.axes[0].texts]
        assert labels.count("b000") == 1
        assert "uniform-16" in labels
        assert "float 25.0%" in labels
    finally:
        plt.close(figure)


def test_the_continued_search_plot_carries_the_warnings() -> None:
    records = [record(0, 16, 0.1), record(1, 8, 0.2)]
    context = PlotContext(
        objectives=("error", "speedup"),
        maximized=frozenset({"speedup"}),
        warnings=("beacon b001 failed", "x"),
    )
    figure = pareto_figure(records, records, context)
    try:
        assert "warning: beacon b001 failed (+1 more)" in _texts(figure)
    finally:
        plt.close(figure)
