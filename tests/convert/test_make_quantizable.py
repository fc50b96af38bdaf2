"""make_quantizable: converted models equal the originals in float; points by path;
the workload prices memory as computed by hand; unsupported configurations raise."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mohaq.convert import (
    ConversionError,
    QuantGRU,
    QuantLSTM,
    UnsupportedConfigurationError,
    make_quantizable,
    model_workload,
)
from mohaq.hardware import get_cost_model
from mohaq.models.quant_linear import QuantLinear
from mohaq.quant import BitAssignment, apply_bit_assignment, quantizers

TIGHT = dict(rtol=0.0, atol=1e-12)


def _converted(module: nn.Module, **options) -> nn.Module:
    return make_quantizable(copy.deepcopy(module), **options)


def _assert_states_equal(expected, actual) -> None:
    if isinstance(expected, tuple):
        for e, a in zip(expected, actual, strict=True):
            torch.testing.assert_close(a, e, **TIGHT)
    else:
        torch.testing.assert_close(actual, expected, **TIGHT)


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_recurrent_equals_torch_in_float(cell, batch_first, bidirectional, num_layers) -> None:
    torch.manual_seed(0)
    original = cell(5, 7, num_layers, batch_first=batch_first, bidirectional=bidirectional)
    original = original.double().eval()
    converted = _converted(original)
    assert isinstance(converted, QuantGRU if cell is nn.GRU else QuantLSTM)
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    expected_out, expected_state = original(x)
    out, state = converted(x)
    torch.testing.assert_close(out, expected_out, **TIGHT)
    _assert_states_equal(expected_state, state)


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM])
def test_float32_and_operator_granularity_and_scripted_loop_equal_torch(cell) -> None:
    torch.manual_seed(1)
    original = cell(6, 8, 2, batch_first=True, bidirectional=True).eval()
    x = torch.randn(3, 11, 6)
    expected_out, expected_state = original(x)
    for options in (
        {},
        {"granularity": "operator"},
        {"granularity": "operator", "kernel": "script"},
    ):
        out, state = _converted(original, **options)(x)
        torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-6)
        flat = state if isinstance(state, tuple) else (state,)
        flat_expected = expected_state if isinstance(expected_state, tuple) else (expected_state,)
        for a, e in zip(flat, flat_expected, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [[4, 7, 2, 7], [7, 7, 4, 2]])  # unsorted with a tie; sorted
def test_packed_sequences_equal_torch(cell, bidirectional, lengths) -> None:
    torch.manual_seed(2)
    original = cell(3, 5, 2, batch_first=False, bidirectional=bidirectional).double().eval()
    converted = _converted(original)
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    ordered = lengths == sorted(lengths, reverse=True)
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=ordered)
    expected_out, expected_state = original(packed)
    out, state = converted(packed)
    torch.testing.assert_close(out.data, expected_out.data, **TIGHT)
    assert torch.equal(out.batch_sizes, expected_out.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        ours, theirs = getattr(out, name), getattr(expected_out, name)
        assert (ours is None and theirs is None) or torch.equal(ours, theirs)
    _assert_states_equal(expected_state, state)


def test_unbatched_input_and_zero_initial_state() -> None:
    torch.manual_seed(3)
    original = nn.LSTM(3, 4, bidirectional=True).double().eval()
    converted = _converted(original)
    x = torch.randn(6, 3, dtype=torch.float64)
    zeros = torch.zeros(2, 4, dtype=torch.float64)
    expected_out, expected_state = original(x)
    out, state = converted(x, (zeros, zeros))
    torch.testing.assert_close(out, expected_out, **TIGHT)
    _assert_states_equal(expected_state, state)


def test_without_bias_equal_and_biases_frozen_and_uncounted() -> None:
    torch.manual_seed(4)
    original = nn.GRU(3, 4, bias=False, batch_first=True).double()
    converted = _converted(original)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(converted(x)[0], original(x)[0], **TIGHT)
    trainable = {n for n, p in converted.named_parameters() if p.requires_grad}
    assert trainable == {"layers.0.weight"}
    assert model_workload(converted).fixed_params == 0


class UserModel(nn.Module):
    """A user's keyword spotter: a GRU, then a classifier on the last hidden state."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.GRU(4, 3, batch_first=True)
        self.head = nn.Sequential(nn.Linear(3, 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.encoder(x)
        return self.head(hidden[-1])


def test_user_model_points_named_by_path_and_workload_prices_by_hand() -> None:
    torch.manual_seed(5)
    original = UserModel().double().eval()
    model = _converted(original)
    assert isinstance(model.encoder, QuantGRU) and isinstance(model.head[0], QuantLinear)
    x = torch.randn(3, 8, 4, dtype=torch.float64)
    torch.testing.assert_close(model(x), original(x), **TIGHT)
    workload = model_workload(model)
    assert workload.names == ("encoder.input", "encoder.weight", "head.0.input", "head.0.weight")
    assert set(quantizers(model)) == set(workload.names)
    gru_params = 3 * 3 * (4 + 3)  # 3 gates x 3 units x [W_ih | W_hh] columns
    assert workload.point("encoder.weight").params == gru_params == 63
    assert workload.point("encoder.weight").macs_per_frame == 63
    assert workload.point("head.0.weight").macs_per_frame == 6
    assert workload.fixed_params == 2 * 9 + 2  # GRU b_ih, b_hh and the linear bias
    report = get_cost_model("size").metrics(workload, BitAssignment.uniform(workload.names, 8))
    # (63 + 6) weights at 8 bits + 20 biases at 16 bits = 69 + 40 bytes
    assert report.totals["memory_bytes"] == 109.0
    mixed = BitAssignment({"encoder.weight": 4, "encoder.input": 8, "head.0.weight": 2})
    assert get_cost_model("size").metrics(workload, mixed).totals["memory_bytes"] == (
        63 * 4 / 8 + 6 * 2 / 8 + 40
    )


def test_operator_points_and_names_of_stacked_layers() -> None:
    model = make_quantizable(nn.LSTM(2, 3, 2), granularity="operator")
    names = model_workload(model).names
    assert model.name == "lstm"  # a bare module is named after its class
    assert "lstm.l0.w_ih" in names and "lstm.l1.fc" in names and "lstm.l1.c" in names
    assert model_workload(model).point("lstm.l1.w_ih").params == 4 * 3 * 3


def test_assignment_quantizes_the_converted_model() -> None:
    torch.manual_seed(6)
    original = UserModel().eval()
    model = _converted(original, granularity="operator")
    x = torch.randn(8, 10, 4)
    names = model_workload(model).names
    errors = {}
    for bits in (8, 2):
        apply_bit_assignment(model, BitAssignment.uniform(names, bits))
        errors[bits] = (model(x) - original(x)).abs().max().item()
    apply_bit_assignment(model, BitAssignment({}))
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-6)
    assert 0.0 < errors[8] < 0.05 < errors[2]


def test_training_dropout_and_gradients() -> None:
    torch.manual_seed(7)
    original = nn.GRU(3, 6, 2, dropout=0.5, batch_first=True)
    converted = _converted(original)
    assert converted.training
    x = torch.randn(2, 4, 3)
    first, second = converted(x)[0], converted(x)[0]
    assert not torch.allclose(first, second)  # dropout between the layers
    first.sum().backward()
    assert all(p.grad is not None for p in converted.parameters() if p.requires_grad)
    converted.eval(), original.eval()
    torch.testing.assert_close(converted(x)[0], original(x)[0], rtol=1e-5, atol=1e-6)


def test_unsupported_configurations_raise_naming_what_is_allowed() -> None:
    with pytest.raises(UnsupportedConfigurationError, match=r"proj_size=2.*allowed: proj_size=0"):
        make_quantizable(nn.Sequential(nn.LSTM(3, 4, proj_size=2)))
    holder = nn.Sequential(nn.Linear(3, 3), nn.RNN(3, 3))
    with pytest.raises(UnsupportedConfigurationError, match=r"'1' is a torch.nn.RNN.*skip=\['1'\]"):
        make_quantizable(copy.deepcopy(holder))
    kept = make_quantizable(holder, skip=["1"])
    assert isinstance(kept[0], QuantLinear) and type(kept[1]) is nn.RNN
    with pytest.raises(ConversionError, match=r"skip names no module: \['nope'\]"):
        make_quantizable(nn.Sequential(nn.Linear(2, 2)), skip=["nope"])
    with pytest.raises(
        ConversionError, match=r"granularity must be one of \('layer', 'operator'\)"
    ):
        make_quantizable(nn.GRU(2, 2), granularity="gate")  # type: ignore[arg-type]
    with pytest.raises(ConversionError, match=r"kernel must be one of \('auto', "):
        make_quantizable(nn.GRU(2, 2), kernel="gpu")  # type: ignore[arg-type]
    gru = make_quantizable(nn.GRU(2, 3))
    with pytest.raises(
        UnsupportedConfigurationError, match=r"nonzero initial state.*hx=None or zeros"
    ):
        gru(torch.randn(4, 1, 2), torch.ones(1, 1, 3))


def test_converting_twice_changes_nothing() -> None:
    model = make_quantizable(UserModel())
    names = model_workload(model).names
    assert model_workload(make_quantizable(model)).names == names
    with pytest.raises(ConversionError, match="call make_quantizable first"):
        model_workload(nn.Sequential(nn.ReLU()))


def test_a_classifier_run_once_per_sequence_spreads_its_macs_over_the_steps() -> None:
    model = make_quantizable(UserModel())
    workload = model_workload(model, once_per_sequence=["head.0"], steps_per_sequence=4)
    assert workload.point("head.0.weight").macs_per_frame == 2  # 3 x 2 MACs over 4 steps
    assert workload.point("head.0.weight").params == 6  # its memory is unchanged
    assert workload.point("encoder.weight").macs_per_frame == 63
    with pytest.raises(ConversionError, match=r"no quantizable linear layer: \['encoder'\]"):
        model_workload(model, once_per_sequence=["encoder"], steps_per_sequence=4)
    with pytest.raises(ConversionError, match="needs steps_per_sequence >= 1"):
        model_workload(model, once_per_sequence=["head.0"])


@pytest.mark.parametrize("granularity", ["layer", "operator"])
def test_every_cost_model_prices_a_converted_workload(granularity) -> None:
    from mohaq.hardware.registry import available_cost_models

    workload = model_workload(make_quantizable(nn.GRU(8, 16, 2, bidirectional=True),
                                               granularity=granularity))  # fmt: skip
    eight = BitAssignment.uniform(workload.names, 8)
    priced = []
    for name in available_cost_models():
        if name == "lookup-table":
            continue  # it needs a user's measured table
        assert get_cost_model(name).metrics(workload, eight).totals
        priced.append(name)
    assert {"silago", "bitfusion", "bismo", "bops", "size"} <= set(priced)
    # MACs per frame: 2 directions x 3 gates x 16 units x (8 + 16), then x (32 + 16) inputs
    macs = 2 * 3 * 16 * (8 + 16) + 2 * 3 * 16 * (32 + 16)
    assert get_cost_model("bops").metrics(workload, eight).totals["bops"] == macs * 8 * 8
