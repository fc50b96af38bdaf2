from __future__ import annotations

import pytest

from mohaq.hardware import (
    ConstantError,
    CostModelError,
    UnknownCostModelError,
    available_cost_models,
    get_cost_model,
    register_cost_model,
)
from mohaq.hardware.base import CostModel, CostReport
from mohaq.hardware.registry import CostModelRegistry, constructor_keys, cost_model_class
from mohaq.hardware.silago import SiLagoCostModel

BUILTINS = ["bismo", "bitfusion", "bitfusion-mohaq", "bops", "lookup-table", "silago", "size"]


class _Constant(CostModel):
    metric_names = ("one",)

    def __init__(self) -> None:
        super().__init__(allowed_bits=None)

    def metrics(self, workload, assignment):  # type: ignore[no-untyped-def]
        return CostReport(self.name, {"one": 1.0})


def test_builtins_are_registered() -> None:
    assert set(BUILTINS) <= set(available_cost_models())
    assert isinstance(get_cost_model("silago"), SiLagoCostModel)


def test_registering_a_name_twice_raises() -> None:
    with pytest.raises(CostModelError, match="'silago' is already registered"):
        register_cost_model("silago")(_Constant)
    assert isinstance(get_cost_model("silago"), SiLagoCostModel)


def test_fresh_registry_registers_once() -> None:
    registry = CostModelRegistry()
    registry.register("constant", _Constant)
    assert registry.names() == ["constant"]
    with pytest.raises(CostModelError, match="already registered"):
        registry.register("constant", _Constant)
    with pytest.raises(CostModelError, match="not a CostModel subclass"):
        registry.register("other", dict)  # type: ignore[arg-type]


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(
        UnknownCostModelError, match="unknown cost model 'tpu'; registered: bismo, "
    ):
        get_cost_model("tpu")


def test_unknown_override_lists_valid_keys() -> None:
    with pytest.raises(
        CostModelError, match="no constant\\(s\\) \\['speed'\\]; valid: speedup_per_bits"
    ):
        get_cost_model("silago", speed=3)


def test_constructor_validation() -> None:
    with pytest.raises(
        ConstantError,
        match="cost model 'silago': constant 'speedup_per_bits' = .* has no entry for bit "
        "width\\(s\\) \\[2\\]",
    ):
        get_cost_model("silago", allowed_bits=[2, 4, 8, 16])
    with pytest.raises(
        ConstantError, match="constant 'baseline_bits' = 2 is not one of allowed_bits"
    ):
        get_cost_model("bitfusion", baseline_bits=2, allowed_bits=[4, 8])
    with pytest.raises(
        ConstantError, match="constant 'batch' = 0 is zero; allowed: an integer > 0"
    ):
        get_cost_model("bitfusion", batch=0)
    with pytest.raises(
        ConstantError, match="has no speedup for weight x activation bits \\[128, 256\\]"
    ):
        get_cost_model("bitfusion-mohaq", speedup_per_bit_product={64: 1.0})
    with pytest.raises(ConstantError, match="constant 'allowed_bits' = \\[8, 32\\] holds \\[32\\]"):
        get_cost_model("bitfusion", allowed_bits=[8, 32], baseline_bits=8)
    with pytest.raises(CostModelError, match="needs constant\\(s\\) \\['table'\\]"):
        get_cost_model("lookup-table")


def test_every_constant_is_declared() -> None:
    for name in available_cost_models():
        cls = cost_model_class(name)
        assert list(cls.constants) == constructor_keys(cls), name
