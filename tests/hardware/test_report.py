from __future__ import annotations

import subprocess
import sys

import pytest

from mohaq.hardware import PlatformError
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.hardware.report import cost_table, default_platforms, main
from mohaq.quant.assignment import BitAssignment, BitAssignmentError


def test_cost_table_lists_each_platform() -> None:
    workload = mohaq_sru_workload()
    table = cost_table(
        workload, BitAssignment.uniform(workload.names, 8), ["silago", "bitfusion_mohaq"]
    )
    assert "== silago ==" in table and "== bitfusion_mohaq ==" in table
    assert "  speedup: 2\n" in table and "  speedup: 4\n" in table
    assert table.count("output.weight") == 2


def test_infeasible_platform_is_reported_not_raised() -> None:
    workload = mohaq_sru_workload()
    table = cost_table(workload, BitAssignment.uniform(workload.names, 2), ["silago", "size"])
    assert "infeasible on this platform" in table
    assert "sru0.weight: 2 bits not allowed on silago; allowed: [4, 8, 16]" in table
    assert "== size ==" in table and "compression: 15.8121" in table  # 22,215,600 / 1,404,975 bytes


def test_memory_capacity_violation_is_noted() -> None:
    workload = mohaq_sru_workload()
    table = cost_table(
        workload,
        BitAssignment.uniform(workload.names, 8),
        [{"name": "silago", "overrides": {"memory_capacity_bytes": 6 * 2**20 // 2}}],
        markdown=True,
    )
    assert table.startswith("### silago")
    assert "- note: constraint: memory 5,567,100 bytes" in table


def test_bad_inputs_raise() -> None:
    workload = mohaq_sru_workload()
    with pytest.raises(BitAssignmentError, match="unknown quantization point"):
        cost_table(workload, BitAssignment({"lstm.weight": 8}), ["silago"])
    with pytest.raises(PlatformError, match="unknown platform 'tpu'"):
        cost_table(workload, BitAssignment.uniform(workload.names, 8), ["tpu"])


def test_main_prints_reference_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--platform", "silago", "--bits", "8", "--set", "output=4"])
    out = capsys.readouterr().out
    # time: 3,455,100 MACs / 2 + 2,094,400 / 4 against 5,549,500 at 16 bits
    physical = 5_549_500 / (3_455_100 / 2 + 2_094_400 / 4)
    mean = (3_455_100 * 2 + 2_094_400 * 4) / 5_549_500
    assert f"  speedup: {physical:.4f}" in out
    assert f"  speedup_mohaq: {mean:.4f}" in out
    assert set(default_platforms()) <= {
        "silago",
        "bitfusion_mohaq",
        "bitfusion",
        "bismo_pynq",
        "bismo_ultra96",
        "size",
        "bops",
    }


def test_module_runs_as_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mohaq.hardware.report", "--platform", "bitfusion", "--bits", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "== bitfusion ==" in done.stdout and "latency_s (s/frame)" in done.stdout
