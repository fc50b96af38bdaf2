"""Each shipped platform next to the published figure or formula it was derived from."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from mohaq.hardware import load_platform
from mohaq.hardware.base import Product
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.quant.points import QuantPoint

HARDWARE = Path(__file__).parents[2] / "lightning_configs" / "hardware"


@pytest.mark.parametrize(
    ("platform", "published_tops", "tolerance"),
    # github.com/EECS-NTNU/bismo doc/platforms.md: 8x256x8@200 MHz "6.5 binary TOPS",
    # 10x256x10@300 MHz "15 binary TOPS" (README: 15.4)
    [("bismo_pynq", 6.5, 0.01), ("bismo_ultra96", 15.0, 0.025)],
)
def test_bismo_peak_binary_throughput(
    platform: str, published_tops: float, tolerance: float
) -> None:
    dims = load_platform(platform)
    # one tile: Dm outputs, Dk inputs, Dn frames at 1 x 1 bits (binary; the bit
    # assignments of a search start at 2 bits, so the product is priced directly)
    model = load_platform(platform, batch=dims.dn)
    point = QuantPoint("l.weight", "weight", "l", 0, dims.dm * dims.dk, dims.dk, dims.dm, "l.input")
    cycles = model.cycles(Product(point, 1, 1))
    assert cycles == 1
    ops = 2 * dims.dm * dims.dk * dims.dn  # a multiply and an add per MAC, per batch
    tops = ops * model.frequency_hz / cycles / 1e12
    assert abs(tops / published_tops - 1) <= tolerance


def test_bitfusion_compute_energy_per_mac() -> None:
    # HARDWARE.md: 235.104 pJ per cycle for the 16 x 32 array, so about 0.459 / pf pJ per MAC
    model = load_platform("bitfusion", batch=16)
    point = QuantPoint("l.weight", "weight", "l", 256 * 32, 256 * 32, 256, 32, "l.input")
    for bits, pf in ((8, 1), (4, 4), (2, 16)):
        cost = model.layer_cost(Product(point, bits, bits))
        assert cost.compute_pj / (16 * 256 * 32) == pytest.approx(235.104 / 512 / pf)


def test_lookup_table_example_is_the_bismo_formula_it_says() -> None:
    # lookup_table_example.yaml: latency = BISMO PYNQ-Z1 cycles (8 x 256 x 8, batch 1)
    # / 200 MHz in ms; energy = BOPs x 1e-9 mJ
    shapes = {p.layer: (p.in_features, p.out_features) for p in mohaq_sru_workload().points}
    with open(HARDWARE / "lookup_table_example.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 * 16
    for row in rows:
        k, m = shapes[row["layer"]]
        w, a = int(row["weight_bits"]), int(row["activation_bits"])
        cycles = math.ceil(m / 8) * math.ceil(1 / 8) * math.ceil(k / 256) * w * a
        assert float(row["latency"]) == pytest.approx(cycles / 200e6 * 1e3, rel=1e-3)
        assert float(row["energy"]) == pytest.approx(k * m * w * a * 1e-9, rel=1e-3)
