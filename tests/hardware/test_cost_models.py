"""Hand-computed costs of every model on a tiny 2-layer workload.

The workload: layer l0 is a 4 -> 8 product (32 MACs, 32 params), layer l1 an
8 -> 64 product (512 MACs, 512 params); 544 MACs in all; 10 fixed params at 16 bits.
"""

from __future__ import annotations

import math

import pytest

from mohaq.hardware import InfeasibleAssignmentError, get_cost_model
from mohaq.hardware.base import CostReport
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload


def tiny_workload() -> Workload:
    return Workload(
        (
            QuantPoint("l0.input", "activation", "l0"),
            QuantPoint("l0.weight", "weight", "l0", 32, 32, 4, 8, "l0.input"),
            QuantPoint("l1.input", "activation", "l1"),
            QuantPoint("l1.weight", "weight", "l1", 512, 512, 8, 64, "l1.input"),
        ),
        fixed_params=10,
        fixed_bits=16,
    )


def bits(w0: int, a0: int, w1: int, a1: int) -> BitAssignment:
    return BitAssignment({"l0.weight": w0, "l0.input": a0, "l1.weight": w1, "l1.input": a1})


def test_silago_mixed_8_and_4() -> None:
    report = get_cost_model("silago").metrics(tiny_workload(), bits(8, 8, 4, 4))
    totals = report.totals
    # speedup = (32 MACs x 2 + 512 x 4) / 544 = 2112 / 544
    assert totals["speedup"] == pytest.approx(2112 / 544)
    # weight bits = 32 x 8 + 512 x 4 = 2304; x 0.08 pJ = 184.32
    # MACs: 32 x 1.084/2 = 17.344; 512 x 0.613/4 = 78.464
    assert totals["energy"] == pytest.approx(184.32 + 17.344 + 78.464)
    # all at 16: 544 x 16 x 0.08 = 696.32; 544 x 1.666 = 906.304
    assert totals["energy_saving"] == pytest.approx((696.32 + 906.304) / 280.128)
    # memory = (2304 + 10 x 16) / 8 = 308 bytes
    assert totals["memory_bytes"] == 308
    assert totals["memory_mb"] == pytest.approx(308 / 2**20)
    assert [row["layer"] for row in report.rows] == ["l0", "l1"]
    assert [row["speedup"] for row in report.rows] == [2.0, 4.0]


def test_silago_rejects_2_bits_float_and_mixed_layer() -> None:
    model = get_cost_model("silago")
    workload = tiny_workload()
    problems = model.check(workload, bits(8, 8, 2, 2))
    assert any("l1.weight: 2 bits not allowed" in p for p in problems)
    with pytest.raises(InfeasibleAssignmentError, match="l1.weight: 2 bits not allowed"):
        model.metrics(workload, bits(8, 8, 2, 2))
    float_points = BitAssignment({"l0.weight": 8, "l0.input": 8})
    assert any("l1.weight: float" in p for p in model.check(workload, float_points))
    with pytest.raises(InfeasibleAssignmentError, match="float"):
        model.metrics(workload, float_points)
    mixed = model.check(workload, bits(8, 4, 4, 4))
    assert mixed == [
        "layer l0: weight l0.weight at 8 bits and input l0.input at 4 bits must share one "
        "precision on silago"
    ]
    assert model.check(workload, bits(16, 16, 4, 4)) == []


def test_memory_capacity_is_a_check_not_an_error() -> None:
    model = get_cost_model("silago", memory_capacity_bytes=300)
    workload = tiny_workload()
    problems = model.check(workload, bits(8, 8, 4, 4))  # 308 bytes > 300
    assert len(problems) == 1 and "exceeds the capacity" in problems[0]
    assert model.metrics(workload, bits(8, 8, 4, 4)).totals["memory_bytes"] == 308
    assert model.check(workload, bits(4, 4, 4, 4)) == []  # (544 x 4 + 160) / 8 = 292


def test_bitfusion_mohaq_table() -> None:
    model = get_cost_model("bitfusion-mohaq")
    totals = model.metrics(tiny_workload(), bits(8, 4, 2, 2)).totals
    # l0: 8 x 4 = 32 -> 8; l1: 2 x 2 = 4 -> 64; (32 x 8 + 512 x 64) / 544
    assert totals["speedup"] == pytest.approx(33024 / 544)
    assert totals["memory_bytes"] == (32 * 8 + 512 * 2 + 160) / 8
    # 16 x 2 = 32 -> 8 for both layers
    assert model.metrics(tiny_workload(), bits(16, 2, 2, 16)).totals["speedup"] == 8.0
    assert model.check(tiny_workload(), bits(8, 4, 2, 2)) == []


def test_bitfusion_analytic_tiny_layer_by_hand() -> None:
    model = get_cost_model("bitfusion")
    workload = tiny_workload()
    report = model.metrics(workload, bits(8, 8, 8, 8))
    l0 = report.rows[0]
    # l0 at 8x8 (pf 1): compute = 1 x ceil(8/32) x ceil(4/16) = 1 cycle
    assert l0["pf"] == 1 and l0["compute_cycles"] == 1
    # DRAM bits: weights 32 x 8 = 256, inputs 4 x 8 = 32, outputs 8 x 32 = 256 -> 544
    # -> ceil(544 / 192) = 3 cycles; first load ceil((256 + 32)/192) = 2; last store
    # ceil(256/192) = 2; overlapped traffic max(0, 3 - 2 - 2) = 0
    assert l0["dram_cycles"] == 3
    assert l0["latency_cycles"] == max(1, 0) + 2 + 2
    # energy: 1 cycle x 235.104 + 544 DRAM bits x 15 + SRAM:
    #   weight write 256 x 0.029 + weight read 256 x 0.021 + input write 32 x 0.114
    #   + input read 32 x 1 column group x 0.059 + partial sums 1 cycle x 32 x 32 x
    #   (0.033 + 0.073) + output read 256 x 0.033
    sram = 256 * 0.029 + 256 * 0.021 + 32 * 0.114 + 32 * 0.059 + 1024 * 0.106 + 256 * 0.033
    assert l0["energy_pj"] == pytest.approx(235.104 + 544 * 15 + sram)
    assert l0["bound"] == "dram"
    assert model.parallelism(2, 2) == 16
    assert model.parallelism(4, 8) == 2
    assert model.parallelism(16, 16) == 0.25
    assert model.parallelism(16, 8) == 0.5
    assert model.parallelism(3, 5) == model.parallelism(4, 8)


def test_bismo_cycles_by_hand() -> None:
    model = get_cost_model("bismo")  # PYNQ-Z1: 8 x 256 x 8 at 200 MHz, batch 1
    totals = model.metrics(tiny_workload(), bits(8, 8, 4, 2)).totals
    # l0: ceil(8/8) x ceil(1/8) x ceil(4/256) x 8 x 8 = 64
    # l1: ceil(64/8) x ceil(1/8) x ceil(8/256) x 4 x 2 = 64
    assert totals["latency_cycles"] == 128
    assert totals["latency_s"] == pytest.approx(128 / 200e6)
    # baseline all 8x8: 64 + 8 x 64 = 576
    assert totals["speedup"] == pytest.approx(576 / 128)
    # linear in each precision: 3 bits costs 3/4 of 4 bits (unlike Bit Fusion)
    three = model.metrics(tiny_workload(), bits(8, 8, 3, 2)).totals["latency_cycles"]
    assert three == 64 + 8 * 3 * 2


def test_bismo_ultra96_batch_fills_columns() -> None:
    model = get_cost_model("bismo", dm=10, dn=10, frequency_hz=300e6, batch=10)
    totals = model.metrics(tiny_workload(), bits(8, 8, 8, 8)).totals
    # batch 10 fills the 10 columns: l0 ceil(8/10) x 1 x 1 x 64 = 64 cycles per 10 frames;
    # l1 ceil(64/10) = 7 x 64 = 448 -> (64 + 448) / 10 per frame
    assert totals["latency_cycles"] == pytest.approx(51.2)


def test_size_and_bops_proxies() -> None:
    workload = tiny_workload()
    size = get_cost_model("size").metrics(workload, bits(8, 8, 4, 2)).totals
    # (32 x 8 + 512 x 4 + 10 x 16) / 8 = 308 bytes; float: (544 x 32 + 160) / 8 = 2196
    assert size["memory_bytes"] == 308
    assert size["compression"] == pytest.approx(2196 / 308)
    assert get_cost_model("size").metrics(workload, BitAssignment()).totals["memory_bytes"] == 2196
    bops = get_cost_model("bops").metrics(workload, bits(8, 8, 4, 2)).totals
    # 32 x 8 x 8 + 512 x 4 x 2 = 2048 + 4096; baseline 544 x 64 = 34816
    assert bops["bops"] == 6144
    assert bops["bops_ratio"] == pytest.approx(34816 / 6144)


def test_report_tables() -> None:
    report = get_cost_model("silago").metrics(tiny_workload(), bits(8, 8, 4, 4))
    assert isinstance(report, CostReport)
    markdown = report.to_markdown()
    assert "| layer | weight | input | w_bits | a_bits | macs | params |" in markdown
    assert "- speedup: 3.8824" in markdown
    text = report.to_text()
    assert text.splitlines()[0] == "== silago =="
    assert "energy (pJ/frame): 280.128" in text


def test_metric_declarations_are_consistent() -> None:
    workload = tiny_workload()
    for name, assignment in (
        ("silago", bits(8, 8, 8, 8)),
        ("bitfusion-mohaq", bits(8, 8, 8, 8)),
        ("bitfusion", bits(8, 8, 8, 8)),
        ("bismo", bits(8, 8, 8, 8)),
        ("size", bits(8, 8, 8, 8)),
        ("bops", bits(8, 8, 8, 8)),
    ):
        model = get_cost_model(name)
        totals = model.metrics(workload, assignment).totals
        assert list(totals) == list(model.metric_names), name
        assert set(model.higher_is_better) <= set(model.metric_names), name
        assert all(math.isfinite(v) for v in totals.values()), name
