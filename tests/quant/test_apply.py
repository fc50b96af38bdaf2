from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mohaq.quant.apply import apply_bit_assignment, current_bit_assignment, quantizers
from mohaq.quant.assignment import BitAssignment, BitAssignmentError
from mohaq.quant.points import QuantPoint, Workload
from mohaq.quant.quantizer import FakeQuantizer


class _Layer(nn.Module):
    def __init__(self, points: bool = True) -> None:
        super().__init__()
        self.input_quant = FakeQuantizer("l0.input")
        self.weight_quant = FakeQuantizer("l0.weight", role="weight")
        self.bias_quant = FakeQuantizer(role="fixed")
        self.linear = nn.Linear(2, 3)
        self._points = points

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_quant(self.linear.weight)
        return self.input_quant(x) @ weight.T + self.bias_quant(self.linear.bias)

    def workload(self) -> Workload:
        return Workload(
            points=(
                QuantPoint("l0.input", "activation", "l0"),
                QuantPoint("l0.weight", "weight", "l0", params=6, macs_per_frame=6,
                           in_features=2, out_features=3, input_point="l0.input"),
                QuantPoint("l0.extra", "operator", "l0"),
            ),
            fixed_params=3,
        )  # fmt: skip


def test_quantizers_are_keyed_by_point_name_without_fixed_extras() -> None:
    model = _Layer()
    assert list(quantizers(model)) == ["l0.input", "l0.weight"]


def test_duplicate_point_names_are_reported_with_their_paths() -> None:
    model = nn.Module()
    model.a = FakeQuantizer("x")
    model.b = FakeQuantizer("x")
    with pytest.raises(ValueError, match="'x' is implemented by two quantizers: 'a' and 'b'"):
        quantizers(model)


def test_apply_sets_bits_and_leaves_absent_points_in_float() -> None:
    model = _Layer()
    apply_bit_assignment(model, BitAssignment({"l0.weight": 4}))
    assert model.weight_quant.bits == 4
    assert model.input_quant.bits is None
    assert model.bias_quant.bits == 16
    assert current_bit_assignment(model) == BitAssignment({"l0.weight": 4})


def test_empty_assignment_turns_everything_to_float() -> None:
    model = _Layer()
    apply_bit_assignment(model, BitAssignment({"l0.weight": 4, "l0.input": 8}), fixed_bits=8)
    assert model.bias_quant.bits == 8
    apply_bit_assignment(model, BitAssignment())
    assert [q.bits for q in (model.input_quant, model.weight_quant, model.bias_quant)] == [None] * 3
    x = torch.randn(4, 2)
    torch.testing.assert_close(model(x), x @ model.linear.weight.T + model.linear.bias)
    assert len(current_bit_assignment(model)) == 0


def test_fixed_bits_none_keeps_extras_in_float() -> None:
    model = _Layer()
    apply_bit_assignment(model, BitAssignment({"l0.weight": 2}), fixed_bits=None)
    assert model.bias_quant.bits is None


def test_unknown_point_lists_the_workload_points() -> None:
    with pytest.raises(
        BitAssignmentError, match=r"\['nope'\].*valid points: l0\.input, l0\.weight, l0\.extra"
    ):
        apply_bit_assignment(_Layer(), BitAssignment({"nope": 8}))


def test_point_without_quantizer_lists_the_quantized_points() -> None:
    # l0.extra is in the workload but nothing in the model quantizes it.
    with pytest.raises(
        BitAssignmentError, match=r"\['l0\.extra'\].*valid points: l0\.input, l0\.weight"
    ):
        apply_bit_assignment(_Layer(), BitAssignment({"l0.extra": 8}))


def test_model_without_workload_is_checked_against_its_quantizers() -> None:
    model = nn.Sequential(FakeQuantizer("only"))
    with pytest.raises(BitAssignmentError, match="valid points: only"):
        apply_bit_assignment(model, BitAssignment({"other": 4}))
    apply_bit_assignment(model, BitAssignment({"only": 4}))
    assert model[0].bits == 4


def test_invalid_fixed_bits_is_rejected() -> None:
    with pytest.raises(BitAssignmentError, match="fixed_bits.*got 32"):
        apply_bit_assignment(_Layer(), BitAssignment({"l0.weight": 4}), fixed_bits=32)


def test_current_assignment_follows_bits_set_by_hand() -> None:
    model = _Layer()
    apply_bit_assignment(model, BitAssignment({"l0.weight": 4}))
    model.input_quant.bits = 8
    assert current_bit_assignment(model) == BitAssignment({"l0.weight": 4, "l0.input": 8})


def test_quantized_forward_differs_from_float_and_state_dict_is_unaffected() -> None:
    model = _Layer()
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    float_out = model(x)
    keys = set(model.state_dict())
    apply_bit_assignment(model, BitAssignment({"l0.weight": 2, "l0.input": 2}))
    assert not torch.allclose(model(x), float_out)
    assert set(model.state_dict()) == keys
