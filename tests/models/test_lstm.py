"""LSTM layers equal torch.nn.LSTM with quantization off."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mohaq.models.cell_cpu import cpu_cell_available
from mohaq.models.lstm import LSTM_OPERATORS, LSTMLayer
from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment

# "auto": float cells run in torch's fused kernel; "cpu" and "script" force the
# compiled and the scripted loop, which must equal torch too.
PATHS = [
    "auto",
    pytest.param(
        "cpu", marks=pytest.mark.skipif(not cpu_cell_available(torch.zeros(1)), reason="no C++")
    ),
    "script",
]


def stack_like(
    reference: nn.LSTM, granularity: str = "layer", kernel: str = "auto"
) -> nn.ModuleList:
    """Our layers with torch's weights: [W_ih | W_hh], rows (direction, gate i f g o, unit)."""
    directions = 2 if reference.bidirectional else 1
    suffixes = ["", "_reverse"][:directions]
    layers = nn.ModuleList()
    for index in range(reference.num_layers):
        size = reference.input_size if index == 0 else reference.hidden_size * directions
        layer = LSTMLayer(size, reference.hidden_size, layer=f"lstm{index}",
                          bidirectional=reference.bidirectional, granularity=granularity,
                          kernel=kernel)  # fmt: skip

        def cat(kind: str, index: int = index) -> Tensor:
            return torch.cat([getattr(reference, f"{kind}_l{index}{s}") for s in suffixes])

        with torch.no_grad():
            layer.weight.copy_(torch.cat([cat("weight_ih"), cat("weight_hh")], dim=1))
            layer.bias_ih.copy_(cat("bias_ih"))
            layer.bias_hh.copy_(cat("bias_hh"))
        layers.append(layer)
    return layers.to(next(reference.parameters()).dtype)


def run_stack(layers: nn.ModuleList, x: Tensor, lengths: Tensor) -> Tensor:
    for layer in layers:
        x = layer(x, lengths)
    return x


def run_packed(reference: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=x.shape[1])[0]


@pytest.mark.parametrize("lengths", [[3, 6, 1], [6, 6, 6]])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("bidirectional", "num_layers", "granularity", "dtype", "atol"),
    [
        (True, 2, "layer", torch.float64, 1e-10),
        (True, 2, "operator", torch.float64, 1e-10),
        (False, 1, "layer", torch.float64, 1e-10),
        (True, 2, "layer", torch.float32, 1e-5),
    ],
)
def test_lstm_stack_equals_torch_lstm_on_packed_sequences(
    bidirectional: bool,
    num_layers: int,
    granularity: str,
    dtype: torch.dtype,
    atol: float,
    path: str,
    lengths: list[int],
) -> None:
    torch.manual_seed(1)
    reference = nn.LSTM(5, 4, num_layers=num_layers, batch_first=True,
                        bidirectional=bidirectional).to(dtype)  # fmt: skip
    ours = stack_like(reference, granularity, path)
    x = torch.randn(3, 6, 5, dtype=dtype, requires_grad=True)
    lengths = torch.tensor(lengths)
    expected, actual = run_packed(reference, x, lengths), run_stack(ours, x, lengths)
    assert torch.allclose(actual, expected, atol=atol, rtol=0)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad((expected * grad).sum(), x)
    (actual_grad,) = torch.autograd.grad((actual * grad).sum(), x)
    assert torch.allclose(actual_grad, expected_grad, atol=atol, rtol=0)


def test_points_and_fixed_parameters() -> None:
    layer = LSTMLayer(5, 4, layer="lstm2", bidirectional=True)
    points = {p.name: p for p in layer.quant_points()}
    assert list(points) == ["lstm2.input", "lstm2.weight"]
    weight = points["lstm2.weight"]
    assert weight.params == weight.macs_per_frame == 2 * 4 * 4 * (5 + 4)
    assert (weight.in_features, weight.out_features) == (9, 32)
    assert layer.fixed_params() == 2 * (2 * 4 * 4)  # b_ih and b_hh


def test_quantized_weights_and_states_change_the_output() -> None:
    torch.manual_seed(2)
    layer = LSTMLayer(3, 4, layer="lstm0")
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    with torch.no_grad():
        float_out = layer(x, lengths)
        apply_bit_assignment(layer, BitAssignment({"lstm0.weight": 16, "lstm0.input": 16}))
        close = layer(x, lengths)
        apply_bit_assignment(layer, BitAssignment({"lstm0.weight": 2}))
        coarse = layer(x, lengths)
    assert torch.allclose(close, float_out, atol=1e-3)
    assert not torch.allclose(coarse, float_out, atol=1e-2)
    assert torch.all(coarse[1, 2:] == 0)


def test_operator_points() -> None:
    layer = LSTMLayer(5, 4, layer="lstm0", bidirectional=False, granularity="operator")
    points = {p.name: p for p in layer.quant_points()}
    assert [points[f"lstm0.{n}"].kind for n in ("x", "h", "c", "w_ih", "w_hh")] == [
        "activation", "state", "state", "weight", "weight",
    ]  # fmt: skip
    assert (points["lstm0.w_ih"].macs_per_frame, points["lstm0.w_ih"].input_point) == (
        80,
        "lstm0.x",
    )
    assert (points["lstm0.w_hh"].macs_per_frame, points["lstm0.w_hh"].input_point) == (
        64,
        "lstm0.h",
    )
    assert [n for n, p in points.items() if p.kind == "operator"] == [
        f"lstm0.{op}" for op in LSTM_OPERATORS
    ]


@pytest.mark.parametrize("point", ["x", "h", "c", "w_ih", "w_hh", *LSTM_OPERATORS])
def test_every_operator_point_quantizes_something(point: str) -> None:
    torch.manual_seed(3)
    layer = LSTMLayer(3, 4, layer="lstm0", granularity="operator")
    x, lengths = torch.randn(2, 6, 3), torch.tensor([6, 4])
    with torch.no_grad():
        float_out = layer(x, lengths)
        apply_bit_assignment(layer, BitAssignment({f"lstm0.{point}": 2}), fixed_bits=None)
        quantized = layer(x, lengths)
    assert not torch.allclose(quantized, float_out, atol=1e-3)
    assert torch.all(quantized[1, 4:] == 0)
