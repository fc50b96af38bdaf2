"""Choosing the assignment: bits, a uniform width, or a search record by index."""

from __future__ import annotations

from pathlib import Path

import pytest

from mohaq.export import ExportError
from mohaq.export.records import read_search_record, resolve_assignment
from mohaq.quant.points import QuantPoint, Workload
from mohaq.search.records import EvaluationLog, EvaluationRecord

WORKLOAD = Workload(
    points=(
        QuantPoint("l0.input", "activation", "l0"),
        QuantPoint("l0.weight", "weight", "l0", params=6, macs_per_frame=6, in_features=2, out_features=3,
                   input_point="l0.input"),
    )
)  # fmt: skip


def _record(index: int, bits: dict[str, int], error: float, label: str = "") -> EvaluationRecord:
    return EvaluationRecord(
        index=index, bits=bits, genes=[], objectives={"error": error}, losses=[error],
        metrics={}, error=error, feasible=True, label=label,
    )  # fmt: skip


def _run_dir(tmp_path: Path) -> Path:
    with EvaluationLog(tmp_path) as log:
        log.append(_record(0, {"l0.input": 8, "l0.weight": 8}, 0.2, "uniform-8"))
        log.append(_record(1, {"l0.input": 8, "l0.weight": 4}, 0.25))
    with open(tmp_path / "evaluations.jsonl", "a") as stream:
        stream.write('{"index": 2, "bits": {"l0.in')  # torn by a crash
    return tmp_path


def test_a_record_by_index(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    assignment, source = resolve_assignment(WORKLOAD, run_dir=run_dir, index=1)
    assert assignment.to_dict() == {"l0.input": 8, "l0.weight": 4}
    assert source["index"] == 1 and source["error"] == 0.25
    with pytest.raises(ExportError, match="indices present: 0 to 1"):
        read_search_record(run_dir, 7)
    with pytest.raises(FileNotFoundError, match="search run directory"):
        read_search_record(tmp_path / "nowhere", 0)


def test_exactly_one_complete_source(tmp_path: Path) -> None:
    assert resolve_assignment(WORKLOAD, uniform_bits=4)[0].to_dict() == {
        "l0.input": 4,
        "l0.weight": 4,
    }
    with pytest.raises(ExportError, match="exactly one"):
        resolve_assignment(WORKLOAD, uniform_bits=4, bits={"l0.input": 8})
    with pytest.raises(ExportError, match="exactly one"):
        resolve_assignment(WORKLOAD)
    with pytest.raises(ExportError, match="both --run_dir and --index"):
        resolve_assignment(WORKLOAD, run_dir=_run_dir(tmp_path))
    with pytest.raises(ExportError, match=r"missing: \['l0.input'\]"):
        resolve_assignment(WORKLOAD, bits={"l0.weight": 8})
    with pytest.raises(ExportError, match="unknown quantization point"):
        resolve_assignment(WORKLOAD, bits={"l0.input": 8, "l0.weight": 8, "l9.weight": 8})
    with pytest.raises(ExportError, match="allowed: 2 to 16"):
        resolve_assignment(WORKLOAD, uniform_bits=1)
