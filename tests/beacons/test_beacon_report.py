"""The beacon report marks beacons that were not retrained: own summary
section, a red cross and its status in every panel of fronts.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from mohaq.beacons.report import (
    beacon_problems,
    compare_fronts,
    fronts_figure,
    write_beacon_summary,
)
from mohaq.beacons.store import Beacon
from mohaq.search.records import EvaluationRecord


def record(index: int, bits: int, error: float) -> EvaluationRecord:
    speedup = 16 / bits
    return EvaluationRecord(
        index=index, bits={"w": bits}, genes=[], objectives={"error": error, "speedup": speedup},
        losses=[error, -speedup], metrics={"speedup": speedup}, error=error, feasible=True,
    )  # fmt: skip


def test_beacons_not_retrained_are_marked_in_the_summary_and_every_panel(tmp_path: Path) -> None:
    records = [record(0, 16, 0.1), record(1, 8, 0.2), record(2, 4, 0.4)]
    beacons = [
        Beacon("b000", {"w": 16}, status="done", attempts=1),
        Beacon("b001", {"w": 8}, status="failed", attempts=2, errors=["boom", "TrainingDivergedError: x"]),
        Beacon("b002", {"w": 4}, status="interrupted", interruptions=["the beacon stage was killed"]),
    ]  # fmt: skip
    problems = beacon_problems(beacons)
    assert problems == [
        "b001 failed after 2 attempt(s): TrainingDivergedError: x",
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
        assert (
            "2 beacon(s) not retrained: b001 (failed), b002 (interrupted)" in figure.get_suptitle()
        )
    finally:
        plt.close(figure)
    summary = tmp_path / "beacon_summary.md"
    write_beacon_summary(summary, comparison, beacons, settings={}, files={})
    text = summary.read_text()
    assert text.index("## Beacons that were not retrained") < text.index("## Settings")
    assert "- **b001 failed after 2 attempt(s): TrainingDivergedError: x**" in text


def test_the_continued_search_plot_carries_the_warnings() -> None:
    from mohaq.search.report import pareto_figure

    records = [record(0, 16, 0.1), record(1, 8, 0.2)]
    figure = pareto_figure(records, records, ("error", "speedup"), ["beacon b001 failed", "x"])
    try:
        assert figure.get_suptitle() == "warning: beacon b001 failed (+1 more)"
    finally:
        plt.close(figure)
