"""A search in TensorBoard: every evaluation's objectives and hardware metrics
against its index, one run (not one per front point), the search as one
HParams session whose hp_metric is the hypervolume, the plot and the front."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_search_fakes import fake_search

from mohaq.search.progress import ProgressBar
from mohaq.search.report import ReportWriter
from mohaq.search.tensorboard import TensorBoardCallback, log_images


def _events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_every_evaluation_and_the_front_in_one_run(tmp_path: Path) -> None:
    result = fake_search(
        tmp_path, budget=12, objectives=["error", "speedup"], constraints={"max_memory_mb": 9},
        callbacks=[ProgressBar(), ReportWriter(), TensorBoardCallback()], report_every=5,
    )  # fmt: skip
    folder = tmp_path / "tensorboard"
    assert result.files["tensorboard"] == folder
    assert [p for p in folder.iterdir() if p.is_dir()] == []  # one run, no run per point
    events = _events(folder)
    scalars = set(events.Tags()["scalars"])
    assert {"evaluation/error", "evaluation/speedup", "evaluation/feasible",
            "hardware/memory_mb", "hardware/energy"} <= scalars  # fmt: skip
    errors = events.Scalars("evaluation/error")
    assert [e.step for e in errors] == list(range(12))
    assert [e.value for e in errors] == pytest.approx([r.error for r in result.records])
    energy = events.Scalars("hardware/energy")
    assert [e.value for e in energy] == pytest.approx([r.metrics["energy"] for r in result.records])
    assert [e.step for e in events.Scalars("search/hypervolume")] == [5, 10, 12]
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(result.hypervolume)
    assert "plots/pareto" in events.Tags()["images"]
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    front = events.Tensors("search/front/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert front.count("\n") == len(result.front) + 1  # header, rule, one row per solution
    # The beacon stage adds fronts.png to the same run afterwards.
    log_images(folder, {"plots/fronts": result.files["pareto_png"]}, 12)
    assert "plots/fronts" in _events(folder).Tags()["images"]
