"""The summary's float, uniform and role rows and its quantization checks."""

from __future__ import annotations

import json
from types import SimpleNamespace

from test_search_fakes import FakeCostModel, fake_workload

from mohaq.quant.assignment import BitAssignment
from mohaq.search import AnalyticEvaluator, SearchSettings, run_search
from mohaq.search.records import EvaluationRecord
from mohaq.search.report import Check, quantization_checks
from mohaq.search.run import default_callbacks


class WithFloat(AnalyticEvaluator):
    """The analytic error, and 10% for the float model (no point quantized)."""

    def error_of(self, assignment: BitAssignment) -> float:
        return 0.1 if not assignment.bits else super().error_of(assignment)


def test_summary_shows_float_uniform_and_role_rows_and_the_checks(tmp_path) -> None:
    settings = SearchSettings(
        platform="fake", budget=8, run_dir=str(tmp_path), rescore_test=False, seed=0
    )
    result = run_search(
        settings, workload=fake_workload(), evaluator=WithFloat(), cost_model=FakeCostModel(),
        callbacks=default_callbacks(progress=False, tensorboard=False), score_float=True,
    )  # fmt: skip
    # W4A8: half the points at 1/4, half at 1/8 -> 0.1875; speedup 16 / max(4, 8) = 2.
    rows = {r.label: r for r in result.role_rows}
    assert list(rows) == ["W4A8", "W8A4"]
    assert rows["W4A8"].error == 0.1875 and rows["W4A8"].objectives["speedup"] == 2.0
    assert [r.index for r in result.role_rows] == [-1, -2]
    assert {r.origin for r in result.role_rows} == {"reference"}
    assert len(result.records) == 8  # the role rows are not in the log or the budget
    stored = json.loads((tmp_path / "float_error.json").read_text())
    assert stored == {"optimization": 0.1, "W4A8": 0.1875, "W8A4": 0.1875}
    summary = (tmp_path / "summary.md").read_text()
    assert "- post-training quantization: mohaq (preset 'mohaq')" in summary
    assert "| float |  | 10.00% |  |  |" in summary
    assert "| uniform-8 | 2 | 12.50% | +2.50 pp | yes |" in summary
    assert "| W4A8 | 2 | 18.75% | +8.75 pp | yes |" in summary
    assert "- uniform-8 within 0.5 pp of float: **no** (12.50% vs 10.00%: +2.50 pp)" in summary
    assert "- W4A8 within 1 pp of float: **no**" in summary
    assert "- uniform-4 within 3 pp of float: **no** (25.00% vs 10.00%: +15.00 pp)" in summary
    # Analytic error falls with bits and speedup with the widest operand: nothing
    # beats uniform-4 at its speedup.
    assert (
        "- a front point with lower error than uniform-4 at equal or higher speedup: **no** "
        "(uniform-4: 25.00% at 4)" in summary
    )


def _record(index: int, label: str, error: float, speedup: float) -> EvaluationRecord:
    return EvaluationRecord(
        index=index, bits={}, genes=[], objectives={"error": error, "speedup": speedup},
        losses=[error, -speedup], metrics={}, error=error, feasible=True, label=label,
        origin="baseline" if label.startswith("uniform") else "optimizer",
    )  # fmt: skip


def test_checks_pass_within_the_budgets_and_name_a_better_front_point() -> None:
    uniform8, uniform4 = _record(0, "uniform-8", 0.204, 2.0), _record(1, "uniform-4", 0.229, 4.0)
    mixed = _record(7, "", 0.22, 4.5)
    result = SimpleNamespace(
        float_error=0.20, baselines=[uniform8, uniform4],
        role_rows=[_record(-1, "W4A8", 0.209, 2.0)], front=[mixed, uniform4],
        info=SimpleNamespace(problem={"constraints": ["max_memory_mb <= 2"]}),
    )  # fmt: skip
    checks = quantization_checks(result)
    assert [c.passed for c in checks] == [True, True, True, True]
    assert checks[-1].detail == (
        "#7: 22.00% at speedup 4.5 vs uniform-4 22.90% at 4; memory limit on: max_memory_mb <= 2"
    )
    assert Check("x", None, "why").line() == "- x: n/a (why)"
    assert quantization_checks(SimpleNamespace(float_error=None)) == []
