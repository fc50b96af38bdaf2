"""MOHAQ's SRU workload at uniform precisions, against the paper's numbers (MOHAQ.md)."""

from __future__ import annotations

import pytest

from mohaq.hardware import get_cost_model, load_platform
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.quant.assignment import BitAssignment

# 75,900 + 3 x 844,800 + 3 x 281,600 + 2,094,400
TOTAL_PARAMS = 5_549_500

# MOHAQ.md: (in, out) of each matrix product, MACs per frame = params = in x out;
# 8,800 biases and recurrent vectors stay at 16 bits.
MOHAQ_LAYERS = [(23, 3300)] + [(256, 3300)] * 3 + [(1100, 256)] * 3 + [(1100, 1904)]
MOHAQ_FIXED = 8_800


def uniform(bits: int) -> BitAssignment:
    return BitAssignment.uniform(mohaq_sru_workload().names, bits)


def test_workload_matches_the_mohaq_table() -> None:
    workload = mohaq_sru_workload()
    assert len(workload.points) == 16
    macs = {p.layer: p.macs_per_frame for p in workload.matmul_weights()}
    assert macs == {
        "sru0": 75_900,
        "sru1": 844_800,
        "sru2": 844_800,
        "sru3": 844_800,
        "proj1": 281_600,
        "proj2": 281_600,
        "proj3": 281_600,
        "output": 2_094_400,
    }
    assert sum(p.params for p in workload.points) == TOTAL_PARAMS
    assert workload.fixed_params == 8_800
    assert all(p.input_point == f"{p.layer}.input" for p in workload.matmul_weights())


@pytest.mark.parametrize(("bits", "speedup"), [(16, 1.0), (8, 2.0), (4, 4.0)])
def test_silago_uniform_speedup(bits: int, speedup: float) -> None:
    totals = load_platform("silago").metrics(mohaq_sru_workload(), uniform(bits)).totals
    assert totals["speedup"] == speedup


def test_silago_energy_all_8() -> None:
    totals = load_platform("silago").metrics(mohaq_sru_workload(), uniform(8)).totals
    # (5,549,500 weights x 8 bits + 8,800 fixed x 16 bits) x 0.08 pJ + 5,549,500 MACs x 1.084 / 2
    expected = (TOTAL_PARAMS * 8 + 8_800 * 16) * 0.08 + TOTAL_PARAMS * 1.084 / 2
    assert totals["energy"] == pytest.approx(expected)


def paper_energy(bits: int) -> float:
    """MOHAQ's SiLago energy per frame (pJ), from the paper's formula and workload table:
    every stored bit (weights at ``bits``, fixed values at 16) x 0.08 pJ + MACs x energy per MAC."""
    energy_per_mac = {16: 1.666, 8: 1.084 / 2, 4: 0.613 / 4}[bits]
    macs = sum(i * o for i, o in MOHAQ_LAYERS)
    stored_bits = macs * bits + MOHAQ_FIXED * 16
    return stored_bits * 0.08 + macs * energy_per_mac


@pytest.mark.parametrize("bits", [16, 4])
def test_silago_energy_is_the_papers_formula(bits: int) -> None:
    totals = load_platform("silago").metrics(mohaq_sru_workload(), uniform(bits)).totals
    assert totals["energy"] == pytest.approx(paper_energy(bits), rel=1e-12)
    assert totals["energy_saving"] == pytest.approx(paper_energy(16) / paper_energy(bits))


def test_silago_mixed_speedups_on_the_reference_sru() -> None:
    # output layer at 4 bits, the rest at 8: MACs 3,455,100 at 2x and 2,094,400 at 4x
    assignment = BitAssignment({**uniform(8).to_dict(), "output.weight": 4, "output.input": 4})
    totals = load_platform("silago").metrics(mohaq_sru_workload(), assignment).totals
    assert totals["speedup_mohaq"] == pytest.approx((3_455_100 * 2 + 2_094_400 * 4) / 5_549_500)
    assert totals["speedup"] == pytest.approx(5_549_500 / (3_455_100 / 2 + 2_094_400 / 4))
    assert totals["speedup"] < totals["speedup_mohaq"]


@pytest.mark.parametrize(("bits", "speedup"), [(16, 1.0), (8, 4.0), (4, 16.0), (2, 64.0)])
def test_bitfusion_mohaq_uniform_speedup(bits: int, speedup: float) -> None:
    totals = load_platform("bitfusion-mohaq").metrics(mohaq_sru_workload(), uniform(bits)).totals
    assert totals["speedup"] == speedup


def test_memory_all_16_and_float_size() -> None:
    workload = mohaq_sru_workload()
    totals = load_platform("silago").metrics(workload, uniform(16)).totals
    assert totals["memory_mb"] == pytest.approx((TOTAL_PARAMS * 16 + 8_800 * 16) / 8 / 2**20)
    float_mb = get_cost_model("size").metrics(workload, BitAssignment()).totals["memory_mb"]
    assert round(float_mb, 1) == 21.2  # MOHAQ's float32 model size
    # MOHAQ's Bitfusion runs bound memory at 2 MB: all-2-bit weights fit, all-4 do not
    size = get_cost_model("size")
    assert size.metrics(workload, uniform(2)).totals["memory_mb"] < 2
    assert size.metrics(workload, uniform(4)).totals["memory_mb"] > 2


def test_bitfusion_recurrent_layer_is_weight_bound_at_batch_1() -> None:
    workload = mohaq_sru_workload()
    model = load_platform("bitfusion")
    latencies = {}
    for w in (2, 4, 8):
        assignment = BitAssignment({**uniform(8).to_dict(), "sru1.weight": w})
        row = next(r for r in model.metrics(workload, assignment).rows if r["layer"] == "sru1")
        assert row["dram_cycles"] > row["compute_cycles"]
        assert row["bound"] == "dram"
        latencies[w] = row["latency_cycles"]
    # latency ~ c + k x weight bits: doubling the weight bits adds twice as much
    step_2_4 = latencies[4] - latencies[2]
    step_4_8 = latencies[8] - latencies[4]
    assert step_4_8 == pytest.approx(2 * step_2_4, rel=0.01)
    # 844,800 weights x 2 bits / 192 bits per cycle per extra 2 bits
    assert step_2_4 == pytest.approx(844_800 * 2 / 192, rel=0.01)
    # speedup over 16x16 at batch 1 stays near the weight-bits ratio, far from MOHAQ's 4x
    speedup_8 = model.metrics(workload, uniform(8)).totals["speedup"]
    assert 1.9 < speedup_8 < 2.0


def test_bitfusion_large_batch_is_compute_bound() -> None:
    workload = mohaq_sru_workload()
    model = load_platform("bitfusion", batch=512)
    rows = {r["layer"]: r for r in model.metrics(workload, uniform(8)).rows}
    # every layer but sru0 (23 inputs for 3,300 outputs written at 32 bits each,
    # so output traffic exceeds its compute) is compute-bound once weights are shared
    assert [k for k, r in rows.items() if r["bound"] == "dram"] == ["sru0"]
    sru1 = rows["sru1"]
    # per frame: ceil(3300/32) x ceil(256/16) = 104 x 16 = 1,664 cycles
    assert sru1["compute_cycles"] == 1_664
    assert sru1["latency_cycles"] == pytest.approx(1_664, rel=0.05)
