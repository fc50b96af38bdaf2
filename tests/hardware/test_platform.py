from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mohaq.hardware import (
    ConstantError,
    CostModelError,
    MissingConstantError,
    PlatformConstantError,
    PlatformError,
    load_platform,
    shipped_platforms,
)
from mohaq.hardware.bismo import BismoCostModel
from mohaq.hardware.bitfusion import BitFusionCostModel, BitFusionMohaqCostModel
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.hardware.registry import cost_model_class
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


SILAGO_YAML = """cost_model: silago
name: fast-silago
constants:
  speedup_per_bits: {16: 1, 8: 3, 4: 5}
  energy_per_mac_pj: {16: 1.666, 8: 0.542, 4: 0.15325}
  sram_pj_per_bit: 0.08
  baseline_bits: 16
"""


def test_user_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "my_silago.yaml"
    path.write_text(SILAGO_YAML)
    model = load_platform(str(path))
    assert model.name == "fast-silago"
    assert model.allowed_bits == (4, 8, 16)  # optional: the keys of speedup_per_bits
    workload = mohaq_sru_workload()
    totals = model.metrics(workload, BitAssignment.uniform(workload.names, 8)).totals
    assert totals["speedup"] == pytest.approx(3)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SILAGO_YAML + "  sram_pj: 1.0\n")
    with pytest.raises(PlatformError, match="unknown platform file key\\(s\\) \\['sram_pj'\\]"):
        load_platform(str(bad))
    no_model = tmp_path / "no_model.yaml"
    no_model.write_text("constants: {}\n")
    with pytest.raises(PlatformError, match="needs a 'cost_model' key"):
        load_platform(str(no_model))
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("cost_model: silago\nconstants: [1, 2]\n")
    with pytest.raises(PlatformError, match="'constants' = \\[1, 2\\] is not a mapping"):
        load_platform(str(not_a_mapping))


def test_missing_constant_names_the_file_and_the_built_in_value(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text(SILAGO_YAML.replace("  sram_pj_per_bit: 0.08\n", ""))
    with pytest.raises(MissingConstantError) as caught:
        load_platform(str(path))
    message = str(caught.value)
    assert f"platform file {path} (cost model silago): missing constant(s) ['sram_pj_per_bit']" in (
        message
    )
    assert "sram_pj_per_bit (SRAM read energy per stored bit, pJ): built-in value 0.08" in message
    assert (
        "optional ones (allowed_bits, asymmetric_activations, memory_capacity_bytes, "
        "per_channel_weights, shared_layer_precision)"
    ) in message
    assert caught.value.missing == ["sram_pj_per_bit"]
    # an override states it too
    assert load_platform(str(path), sram_pj_per_bit=0.1).sram_pj_per_bit == 0.1


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "sram_pj_per_bit: 0.08",
            "sram_pj_per_bit: -0.08",
            "constant 'sram_pj_per_bit' = -0.08 is negative; allowed: a number >= 0 "
            "\\(SRAM read energy per stored bit, pJ\\)",
        ),
        (
            "8: 0.542",
            "8: -0.542",
            "constant 'energy_per_mac_pj' = .* entry 8: -0.542 is negative; allowed: a "
            "mapping integer >= 1 -> number > 0",
        ),
        (
            "{16: 1, 8: 3, 4: 5}",
            "{16: 1, 8: 3, 4: -16}",
            "constant 'speedup_per_bits' = .* entry 4: -16 is negative",
        ),
        (
            "{16: 1.666, 8: 0.542, 4: 0.15325}",
            "{16: 1.666, 8: 0.542}",
            "constant 'energy_per_mac_pj' = \\{16: 1.666, 8: 0.542\\} has no entry for bit "
            "width\\(s\\) \\[4\\]; allowed: an entry for every allowed bit width \\[4, 8, 16\\]",
        ),
        (
            "sram_pj_per_bit: 0.08",
            "sram_pj_per_bit: cheap",
            "constant 'sram_pj_per_bit' = 'cheap' is not a number; allowed: a number >= 0",
        ),
        (
            "baseline_bits: 16",
            "baseline_bits: 16.5",
            "constant 'baseline_bits' = 16.5 is not an integer; allowed: an integer >= 1",
        ),
        (
            "baseline_bits: 16",
            "baseline_bits: 2",
            "constant 'baseline_bits' = 2 is not one of allowed_bits; allowed: one of "
            "allowed_bits \\[4, 8, 16\\]",
        ),
    ],
)
def test_bad_constant_names_file_key_value_and_what_is_allowed(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    assert old in SILAGO_YAML
    path.write_text(SILAGO_YAML.replace(old, new))
    with pytest.raises(PlatformConstantError, match=f"^platform file {path}: {message}"):
        load_platform(str(path))


def test_platform_constant_errors_are_typed() -> None:
    assert issubclass(PlatformConstantError, PlatformError)
    assert issubclass(PlatformConstantError, ConstantError)
    assert issubclass(MissingConstantError, PlatformError)
    assert issubclass(PlatformError, CostModelError)
    with pytest.raises(
        PlatformConstantError,
        match="^platform 'bitfusion': override: constant 'dram_pj_per_bit' = -15.0 is negative",
    ) as caught:
        load_platform("bitfusion", dram_pj_per_bit=-15.0)
    assert (caught.value.key, caught.value.value) == ("dram_pj_per_bit", -15.0)
    with pytest.raises(PlatformConstantError, match="'shared_layer_precision' = 'yes' is not true"):
        load_platform("bismo_pynq", shared_layer_precision="yes")
    with pytest.raises(PlatformConstantError, match="'frequency_hz' = -200000000.0 is negative"):
        load_platform("bismo_ultra96", frequency_hz=-200e6)
    with pytest.raises(PlatformConstantError, match="'memory_capacity_bytes' = 0 is zero"):
        load_platform("size", memory_capacity_bytes=0)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_platform_files_state_every_constant_they_must(name: str) -> None:
    path = Path(__file__).parents[2] / "lightning_configs" / "hardware" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    cls = cost_model_class(data["cost_model"])
    required = {k for k, spec in cls.constants.items() if not spec.optional}
    assert required <= set(data["constants"]), name
    assert data.get("description"), name


def test_platforms_say_which_ptq_grids_they_support(tmp_path: Path) -> None:
    # Hardware platforms run MOHAQ's grids unless their file says otherwise;
    # the proxies (size, bops) model no datapath and take any grid.
    for name in ("silago", "bitfusion", "bitfusion-mohaq", "bismo_pynq"):
        model = load_platform(name)
        assert (model.per_channel_weights, model.asymmetric_activations) == (False, False)
    assert (
        load_platform("size").per_channel_weights and load_platform("bops").asymmetric_activations
    )
    path = tmp_path / "grids.yaml"
    path.write_text(
        "cost_model: bitfusion-mohaq\nconstants:\n  allowed_bits: [2, 4, 8, 16]\n"
        "  shared_layer_precision: false\n  baseline_bits: 16\n"
        "  speedup_per_bit_product: {256: 1.0, 128: 2.0, 64: 4.0, 32: 8.0, 16: 16.0, 8: 32.0, 4: 64.0}\n"
        "  per_channel_weights: true\n  asymmetric_activations: false\n"
    )
    model = load_platform(str(path))
    assert (model.per_channel_weights, model.asymmetric_activations) == (True, False)
    assert load_platform("silago", asymmetric_activations=True).asymmetric_activations
    with pytest.raises(
        PlatformConstantError, match="'per_channel_weights' = 'yes' is not true or false"
    ):
        load_platform("bitfusion", per_channel_weights="yes")
