"""GRU layers equal torch.nn.GRU with quantization off; per-operator points."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mohaq.models.cell_cpu import cpu_cell_available
from mohaq.models.gru import GRU_OPERATORS, GRULayer
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


def copy_torch_weights(ours: GRULayer, reference: nn.RNNBase, index: int) -> None:
    """Our weight is [W_ih | W_hh] with rows ordered (direction, gate, unit), like torch's."""
    suffixes = ["", "_reverse"][: ours.directions]

    def cat(kind: str) -> Tensor:
        return torch.cat([getattr(reference, f"{kind}_l{index}{s}") for s in suffixes])

    with torch.no_grad():
        ours.weight.copy_(torch.cat([cat("weight_ih"), cat("weight_hh")], dim=1))
        ours.bias_ih.copy_(cat("bias_ih"))
        ours.bias_hh.copy_(cat("bias_hh"))


def run_packed(reference: nn.RNNBase, x: Tensor, lengths: Tensor) -> Tensor:
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = reference(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def stack_like(reference: nn.RNNBase, granularity: str, kernel: str = "auto") -> nn.ModuleList:
    directions = 2 if reference.bidirectional else 1
    layers = nn.ModuleList()
    for index in range(reference.num_layers):
        size = reference.input_size if index == 0 else reference.hidden_size * directions
        layer = GRULayer(size, reference.hidden_size, layer=f"gru{index}",
                         bidirectional=reference.bidirectional, granularity=granularity,
                         kernel=kernel)  # fmt: skip
        copy_torch_weights(layer, reference, index)
        layers.append(layer)
    return layers.to(next(reference.parameters()).dtype)


def run_stack(layers: nn.ModuleList, x: Tensor, lengths: Tensor) -> Tensor:
    for layer in layers:
        x = layer(x, lengths)
    return x


@pytest.mark.parametrize("lengths", [[7, 2, 5], [7, 7, 7]])
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
def test_gru_stack_equals_torch_gru_on_packed_sequences(
    bidirectional: bool,
    num_layers: int,
    granularity: str,
    dtype: torch.dtype,
    atol: float,
    path: str,
    lengths: list[int],
) -> None:
    torch.manual_seed(0)
    reference = nn.GRU(5, 4, num_layers=num_layers, batch_first=True,
                       bidirectional=bidirectional).to(dtype)  # fmt: skip
    ours = stack_like(reference, granularity, path)
    x = torch.randn(3, 7, 5, dtype=dtype, requires_grad=True)
    lengths = torch.tensor(lengths)
    expected, actual = run_packed(reference, x, lengths), run_stack(ours, x, lengths)
    assert torch.allclose(actual, expected, atol=atol, rtol=0)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad((expected * grad).sum(), x)
    (actual_grad,) = torch.autograd.grad((actual * grad).sum(), x)
    assert torch.allclose(actual_grad, expected_grad, atol=atol, rtol=0)
    # Weight gradients too: torch's W_hh of layer 0 vs our right block.
    reference.zero_grad()
    (run_packed(reference, x, lengths) * grad).sum().backward()
    (run_stack(ours, x, lengths) * grad).sum().backward()
    hidden = reference.hidden_size
    ours_w_hh = ours[0].weight.grad[: 3 * hidden, x.shape[-1] :]
    assert torch.allclose(ours_w_hh, reference.weight_hh_l0.grad, atol=atol, rtol=0)


def test_layer_points() -> None:
    layer = GRULayer(5, 4, layer="gru1", bidirectional=True)
    points = {p.name: p for p in layer.quant_points()}
    assert list(points) == ["gru1.input", "gru1.weight"]
    weight = points["gru1.weight"]
    assert weight.params == weight.macs_per_frame == 2 * 3 * 4 * (5 + 4)
    assert (weight.in_features, weight.out_features, weight.input_point) == (9, 24, "gru1.input")


def test_operator_points_of_one_layer() -> None:
    layer = GRULayer(5, 4, layer="gru0", bidirectional=False, granularity="operator")
    points = layer.quant_points()
    assert [(p.name, p.kind) for p in points] == [
        ("gru0.x", "activation"), ("gru0.h", "state"), ("gru0.w_ih", "weight"),
        ("gru0.w_hh", "weight"), ("gru0.ih", "operator"), ("gru0.hh", "operator"),
        ("gru0.r", "operator"), ("gru0.z", "operator"), ("gru0.n", "operator"),
        ("gru0.rhn", "operator"), ("gru0.zh", "operator"), ("gru0.zn", "operator"),
    ]  # fmt: skip
    by_name = {p.name: p for p in points}
    assert (by_name["gru0.w_ih"].macs_per_frame, by_name["gru0.w_ih"].input_point) == (60, "gru0.x")
    assert (by_name["gru0.w_hh"].macs_per_frame, by_name["gru0.w_hh"].input_point) == (48, "gru0.h")


@pytest.mark.parametrize("point", ["x", "h", "w_ih", "w_hh", *GRU_OPERATORS])
def test_every_operator_point_quantizes_something(point: str) -> None:
    torch.manual_seed(1)
    layer = GRULayer(3, 4, layer="gru0", granularity="operator")
    x, lengths = torch.randn(2, 6, 3), torch.tensor([6, 4])
    with torch.no_grad():
        float_out = layer(x, lengths)
        apply_bit_assignment(layer, BitAssignment({f"gru0.{point}": 2}), fixed_bits=None)
        quantized = layer(x, lengths)
    assert not torch.allclose(quantized, float_out, atol=1e-3)
    assert torch.all(quantized[1, 4:] == 0)  # padding stays zero


def test_bad_granularity_names_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="granularity must be 'layer' or 'operator'"):
        GRULayer(3, 4, layer="gru0", granularity="gate")  # type: ignore[arg-type]
