"""Hand-computed costs of every model on a tiny 2-layer workload.

The workload: layer l0 is a 4 -> 8 product (32 MACs, 32 params), layer l1 an
8 -> 64 product (512 MACs, 512 params); 544 MACs in all; 10 fixed params at 16 bits.
"""

from __future__ import annotations

import math

import pytest

from mohaq.hardware import CostModelError, InfeasibleAssignmentError, get_cost_model
from mohaq.hardware.base import CostReport, mac_weighted_mean, time_ratio_speedup
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
    # time units: l0 32 MACs / 2 = 16, l1 512 / 4 = 128; at 16 bits 544
    assert totals["speedup"] == pytest.approx(544 / 144)
    # MOHAQ's mean: (32 MACs x 2 + 512 x 4) / 544 = 2112 / 544
    assert totals["speedup_mohaq"] == pytest.approx(2112 / 544)
    # stored bits = 32 x 8 + 512 x 4 + 10 fixed x 16 = 2464; x 0.08 pJ = 197.12
    # MACs: 32 x 1.084/2 = 17.344; 512 x 0.613/4 = 78.464
    assert totals["energy"] == pytest.approx(197.12 + 17.344 + 78.464)
    # all at 16: (544 x 16 + 160) x 0.08 = 709.12; 544 x 1.666 = 906.304
    assert totals["energy_saving"] == pytest.approx((709.12 + 906.304) / 292.928)
    # memory = (2304 + 10 x 16) / 8 = 308 bytes
    assert totals["memory_bytes"] == 308
    assert totals["memory_mb"] == pytest.approx(308 / 2**20)
    assert [row["layer"] for row in report.rows] == ["l0", "l1"]
    assert [row["speedup"] for row in report.rows] == [2.0, 4.0]
    assert [row["time_share"] for row in report.rows] == pytest.approx([16 / 144, 128 / 144])


def equal_macs_workload() -> Workload:
    """Two layers of 32 MACs each: l0 is 4 -> 8, l1 is 8 -> 4."""
    return Workload(
        (
            QuantPoint("l0.input", "activation", "l0"),
            QuantPoint("l0.weight", "weight", "l0", 32, 32, 4, 8, "l0.input"),
            QuantPoint("l1.input", "activation", "l1"),
            QuantPoint("l1.weight", "weight", "l1", 32, 32, 8, 4, "l1.input"),
        )
    )


def test_mean_and_time_ratio_by_hand() -> None:
    # half the MACs 4x faster, half as fast as the baseline
    assert mac_weighted_mean([(32, 4.0), (32, 1.0)]) == 2.5
    # time: 32 / 4 + 32 / 1 = 40 units against 64
    assert time_ratio_speedup([(32, 4.0), (32, 1.0)]) == 1.6
    with pytest.raises(CostModelError, match="zero MACs"):
        time_ratio_speedup([(0, 2.0)])


@pytest.mark.parametrize(
    ("platform", "fast_bits"),
    [("silago", 4), ("bitfusion-mohaq", 8)],  # 4-bit on SiLago and 8x8 on Bit Fusion: 4x
)
def test_speedup_is_the_time_ratio_and_speedup_mohaq_the_mean(
    platform: str, fast_bits: int
) -> None:
    model = get_cost_model(platform)
    totals = model.metrics(equal_macs_workload(), bits(fast_bits, fast_bits, 16, 16)).totals
    assert totals["speedup"] == pytest.approx(1.6)
    assert totals["speedup_mohaq"] == pytest.approx(2.5)
    assert model.describe("speedup").startswith("speedup (physical")
    assert "MAC-weighted mean" in model.describe("speedup_mohaq")


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
    assert totals["speedup_mohaq"] == pytest.approx(33024 / 544)
    # time: 32 / 8 + 512 / 64 = 12 units against 544
    assert totals["speedup"] == pytest.approx(544 / 12)
    assert totals["memory_bytes"] == (32 * 8 + 512 * 2 + 160) / 8
    # 16 x 2 = 32 -> 8 for both layers
    assert model.metrics(tiny_workload(), bits(16, 2, 2, 16)).totals["speedup"] == 8.0
    assert model.check(tiny_workload(), bits(8, 4, 2, 2)) == []


def test_bitfusion_analytic_tiny_layer_by_hand() -> None:
    model = get_cost_model("bitfusion")
    workload = tiny_workload()
    report = model.metrics(workload, bits(8, 8, 8, 8))
    l0 = report.rows[0]
    # l0 at 8x8 (pf 1): one tile of everything; compute = 1 frame x 1 column group
    # x ceil(4 / 16) input steps = 1 cycle
    assert l0["pf"] == 1 and l0["compute_cycles"] == 1
    assert l0["schedule"] == "batch>in>out b1 i4 o8"
    # DRAM bits: weights padded to 16 inputs: 16 x 8 x 8 = 1,024; inputs 4 x 8 = 32;
    # outputs padded to 32 columns at 32 bits: 1,024 loaded + 1,024 stored -> 3,104
    assert l0["dram_bits"] == 3_104
    assert l0["dram_cycles"] == math.ceil(3_104 / 192)
    # first load (1,024 + 32 + 1,024) / 192 -> 11 cycles; last store 1,024 / 192 -> 6;
    # nothing left to overlap: latency = 1 + 11 + 6
    assert l0["latency_cycles"] == 18
    # energy: 1 cycle x 235.104 + 3,104 DRAM bits x 15 + SRAM: weight write 1,024 x 0.029
    #   + weight read 4 x 8 x 8 x 0.021 + input write 32 x 0.114 + input read 32 x 1
    #   column group x 0.059 + output buffer: (load 1,024 + one pass of partial sums
    #   1,024) x 0.073 written, (store 1,024 + 1,024) x 0.033 read
    sram = 1024 * 0.029 + 256 * 0.021 + 32 * 0.114 + 32 * 0.059 + 2048 * 0.073 + 2048 * 0.033
    assert l0["energy_pj"] == pytest.approx(235.104 + 3_104 * 15 + sram)
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
    assert "- speedup: 3.7778" in markdown and "- speedup_mohaq: 3.8824" in markdown
    assert "- note: speedup: physical: total time at the baseline precision" in markdown
    text = report.to_text()
    assert text.splitlines()[0] == "== silago =="
    assert "energy (pJ/frame): 292.928" in text


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
