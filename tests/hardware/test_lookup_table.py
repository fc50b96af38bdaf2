from __future__ import annotations

from pathlib import Path

import pytest

from mohaq.hardware import InfeasibleAssignmentError, get_cost_model, load_platform
from mohaq.hardware.lookup_table import LookupTableError
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
    )


CSV = """layer,weight_bits,activation_bits,latency,energy
l0,8,8,2.0,20.0
l0,4,4,1.0,8.0
l0,4,8,1.5,12.0
l0,8,4,1.5,12.0
l1,8,8,6.0,40.0
l1,4,8,4.0,25.0
l1,4,4,3.0,20.0
l1,8,4,4.5,30.0
"""

YAML = """layers:
  l0:
    8x8: {latency: 2.0, energy: 20.0}
    4x4: {latency: 1.0, energy: 8.0}
    4x8: {latency: 1.5, energy: 12.0}
    8x4: {latency: 1.5, energy: 12.0}
  l1:
    8x8: {latency: 6.0, energy: 40.0}
    4x8: {latency: 4.0, energy: 25.0}
    4x4: {latency: 3.0, energy: 20.0}
    8x4: {latency: 4.5, energy: 30.0}
"""


@pytest.mark.parametrize(("filename", "content"), [("t.csv", CSV), ("t.yaml", YAML)])
def test_table_sums_layers(tmp_path: Path, filename: str, content: str) -> None:
    path = tmp_path / filename
    path.write_text(content)
    model = get_cost_model("lookup-table", table=str(path))
    assert model.allowed_bits == (4, 8)
    assignment = BitAssignment({"l0.weight": 4, "l0.input": 4, "l1.weight": 4, "l1.input": 8})
    totals = model.metrics(tiny_workload(), assignment).totals
    # latency 1 + 4 = 5, energy 8 + 25 = 33; baseline 8/8: latency 2 + 6 = 8, energy 60
    assert totals["latency"] == 5.0 and totals["energy"] == 33.0
    assert totals["speedup"] == pytest.approx(8 / 5)
    assert totals["energy_saving"] == pytest.approx(60 / 33)


def test_layer_absent_from_the_table_is_infeasible(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("\n".join(CSV.splitlines()[:5]) + "\n")  # layer l0 only
    model = get_cost_model("lookup-table", table=str(path))
    assignment = BitAssignment({"l0.weight": 8, "l0.input": 8, "l1.weight": 8, "l1.input": 4})
    with pytest.raises(
        InfeasibleAssignmentError,
        match="no entry for layer 'l1' .* at weight bits 8, activation bits 4",
    ):
        model.metrics(tiny_workload(), assignment)
    assert any("layer 'l1'" in p for p in model.check(tiny_workload(), assignment))


def test_table_must_cover_every_allowed_pair(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("\n".join(line for line in CSV.splitlines() if line != "l1,8,4,4.5,30.0"))
    with pytest.raises(
        LookupTableError, match="does not cover allowed bits \\[4, 8\\]: layer 'l1' lacks 8x4;"
    ):
        get_cost_model("lookup-table", table=str(path))
    # with one precision per layer only the equal pairs are needed
    diagonal = tmp_path / "d.csv"
    diagonal.write_text(
        "\n".join(line for line in CSV.splitlines() if "4,8" not in line and "8,4" not in line)
    )
    model = get_cost_model("lookup-table", table=str(diagonal), shared_layer_precision=True)
    assert model.allowed_bits == (4, 8)
    # a width allowed but absent from the table
    full = tmp_path / "full.csv"
    full.write_text(CSV)
    with pytest.raises(LookupTableError, match="layer 'l0' lacks 2x2, 2x4, 2x8, 4x2, 8x2;"):
        get_cost_model("lookup-table", table=str(full), allowed_bits=[2, 4, 8])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("l0,8,8,-2.0,20.0", "line 2: latency '-2.0' is negative"),
        ("l0,8,8,2.0,0", "line 2: energy '0' is zero"),
        ("l0,8,8,2.0,lots", "line 2: energy 'lots' is not a number"),
        ("l0,0,8,2.0,1.0", "line 2: bits 0 is below 1"),
    ],
)
def test_entries_must_be_positive_numbers(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CSV.replace("l0,8,8,2.0,20.0", row))
    with pytest.raises(LookupTableError, match=f"constant 'table' = '{path}' {message}"):
        get_cost_model("lookup-table", table=str(path))
    in_memory = {("l0", 8, 8): (-1.0, 1.0)}
    with pytest.raises(LookupTableError, match="entry \\('l0', 8, 8\\): latency -1.0 is negative"):
        get_cost_model("lookup-table", table=in_memory)


def test_malformed_tables(tmp_path: Path) -> None:
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("layer,w,a,latency,energy\nl0,8,8,1,1\n")
    with pytest.raises(
        LookupTableError,
        match="constant 'table' = '.*h.csv' has missing column\\(s\\) \\['weight_bits', 'activation_bits'\\]",
    ):
        get_cost_model("lookup-table", table=str(bad_header))
    bad_key = tmp_path / "k.yaml"
    bad_key.write_text("l0:\n  8-8: {latency: 1, energy: 1}\n")
    with pytest.raises(LookupTableError, match="key must be '<weight bits>x<activation bits>'"):
        get_cost_model("lookup-table", table=str(bad_key))
    with pytest.raises(LookupTableError, match="does not exist"):
        get_cost_model("lookup-table", table=str(tmp_path / "none.csv"))


def test_platform_yaml_with_relative_table(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "board.yaml").write_text(
        "cost_model: lookup-table\nconstants:\n  table: t.csv\n  latency_unit: us\n"
        "  energy_unit: uJ\n  baseline_bits: 8\n"
    )
    model = load_platform(str(tmp_path / "board.yaml"))
    assert model.name == "board" and model.units["latency"] == "us"
    assignment = BitAssignment.uniform(tiny_workload().names, 8)
    assert model.metrics(tiny_workload(), assignment).totals["speedup"] == 1.0


def test_shipped_example_table() -> None:
    from mohaq.hardware.reference_workloads import mohaq_sru_workload

    workload = mohaq_sru_workload()
    model = load_platform("lookup_table_example")
    assert model.allowed_bits == (2, 4, 8, 16)
    four = model.metrics(workload, BitAssignment.uniform(workload.names, 4)).totals
    # the example is generated from the BISMO cycle formula: w x a, so 8x8 / 4x4 = 4
    assert four["speedup"] == pytest.approx(4.0, rel=1e-4)
