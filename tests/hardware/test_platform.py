from __future__ import annotations

from pathlib import Path

import pytest

from mohaq.hardware import PlatformError, load_platform, shipped_platforms
from mohaq.hardware.bismo import BismoCostModel
from mohaq.hardware.bitfusion import BitFusionCostModel, BitFusionMohaqCostModel
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.hardware.silago import SiLagoCostModel
from mohaq.quant.assignment import BitAssignment

SHIPPED = [
    "bismo_pynq",
    "bismo_ultra96",
    "bitfusion",
    "bitfusion_mohaq",
    "bops",
    "lookup_table_example",
    "silago",
    "size",
]


def test_every_shipped_platform_loads_and_costs_the_reference_sru() -> None:
    assert shipped_platforms() == SHIPPED
    workload = mohaq_sru_workload()
    for name in SHIPPED:
        model = load_platform(name)
        assert model.name == name
        assert model.metrics(workload, BitAssignment.uniform(workload.names, 8)).totals


def test_yaml_constants_match_the_class_defaults() -> None:
    silago = load_platform("silago")
    assert isinstance(silago, SiLagoCostModel)
    assert silago.energy_per_mac_pj == SiLagoCostModel().energy_per_mac_pj
    assert silago.allowed_bits == (4, 8, 16) and silago.shared_layer_precision
    assert vars(load_platform("bitfusion")) == {**vars(BitFusionCostModel()), "name": "bitfusion"}
    assert isinstance(load_platform("bitfusion-mohaq"), BitFusionMohaqCostModel)
    ultra = load_platform("bismo_ultra96")
    assert isinstance(ultra, BismoCostModel)
    assert (ultra.dm, ultra.dk, ultra.dn, ultra.frequency_hz) == (10, 256, 10, 300e6)


def test_overrides_and_mapping_spec() -> None:
    model = load_platform("bitfusion", batch=16, dram_bits_per_cycle=384)
    assert (model.batch, model.dram_bits_per_cycle) == (16, 384)
    same = load_platform({"name": "bitfusion", "overrides": {"batch": 16}})
    assert same.batch == 16
    with pytest.raises(PlatformError, match="takes 'name' and optional 'overrides'"):
        load_platform({"platform": "silago"})


def test_unknown_override_lists_valid_keys() -> None:
    with pytest.raises(
        PlatformError, match="unknown override key\\(s\\) \\['batchsize'\\]; valid: rows, columns"
    ):
        load_platform("bitfusion", batchsize=4)


def test_unknown_platform_lists_choices() -> None:
    with pytest.raises(
        PlatformError, match="shipped platforms: bismo_pynq, .*registered cost models: bismo"
    ):
        load_platform("tpu")
    with pytest.raises(PlatformError, match="does not exist"):
        load_platform("missing.yaml")


def test_user_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "my_silago.yaml"
    path.write_text(
        "cost_model: silago\nname: fast-silago\nconstants:\n  speedup_per_bits: {16: 1, 8: 3, 4: 5}\n"
    )
    model = load_platform(str(path))
    assert model.name == "fast-silago"
    workload = mohaq_sru_workload()
    assert model.metrics(workload, BitAssignment.uniform(workload.names, 8)).totals["speedup"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("cost_model: silago\nconstants:\n  sram_pj: 1.0\n")
    with pytest.raises(PlatformError, match="unknown platform file key\\(s\\) \\['sram_pj'\\]"):
        load_platform(str(bad))
    no_model = tmp_path / "no_model.yaml"
    no_model.write_text("constants: {}\n")
    with pytest.raises(PlatformError, match="needs a 'cost_model' key"):
        load_platform(str(no_model))
