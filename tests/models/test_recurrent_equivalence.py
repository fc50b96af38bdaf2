"""With quantization off, our cells equal independent references."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mohaq.models.gru import GRULayer
from mohaq.models.lstm import LSTMLayer
from mohaq.models.sru import SRULayer


def _copy_torch_weights(ours: GRULayer | LSTMLayer, reference: torch.nn.RNNBase) -> None:
    suffixes = ["", "_reverse"][: ours.directions]
    with torch.no_grad():
        w_ih = torch.cat([getattr(reference, f"weight_ih_l0{s}") for s in suffixes])
        w_hh = torch.cat([getattr(reference, f"weight_hh_l0{s}") for s in suffixes])
        ours.weight.copy_(torch.cat([w_ih, w_hh], dim=1))
        ours.bias_ih.copy_(torch.cat([getattr(reference, f"bias_ih_l0{s}") for s in suffixes]))
        ours.bias_hh.copy_(torch.cat([getattr(reference, f"bias_hh_l0{s}") for s in suffixes]))


def _reference_per_sequence(reference: torch.nn.RNNBase, x: Tensor, lengths: Tensor) -> Tensor:
    """Runs torch's layer on each sequence alone (no padding), then pads with zeros."""
    out = torch.zeros(x.shape[0], x.shape[1], reference.hidden_size * (2 if reference.bidirectional else 1),
                      dtype=x.dtype)  # fmt: skip
    for b, length in enumerate(lengths.tolist()):
        out[b, :length] = reference(x[b : b + 1, :length])[0][0]
    return out


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("granularity", ["layer", "operator"])
def test_gru_equals_torch_gru(bidirectional: bool, granularity: str) -> None:
    torch.manual_seed(0)
    reference = torch.nn.GRU(5, 4, batch_first=True, bidirectional=bidirectional).double()
    ours = GRULayer(5, 4, layer="gru0", bidirectional=bidirectional, granularity=granularity).double()
    _copy_torch_weights(ours, reference)
    x = torch.randn(3, 7, 5, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([7, 5, 2])
    expected = _reference_per_sequence(reference, x, lengths)
    actual = ours(x, lengths)
    assert torch.allclose(actual, expected, atol=1e-10)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad((expected * grad).sum(), x)
    (actual_grad,) = torch.autograd.grad((actual * grad).sum(), x)
    assert torch.allclose(actual_grad, expected_grad, atol=1e-10)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_equals_torch_lstm(bidirectional: bool) -> None:
    torch.manual_seed(1)
    reference = torch.nn.LSTM(5, 4, batch_first=True, bidirectional=bidirectional).double()
    ours = LSTMLayer(5, 4, layer="lstm0", bidirectional=bidirectional).double()
    _copy_torch_weights(ours, reference)
    x = torch.randn(3, 6, 5, dtype=torch.double)
    lengths = torch.tensor([6, 3, 1])
    assert torch.allclose(ours(x, lengths), _reference_per_sequence(reference, x, lengths), atol=1e-10)


def sru_reference(layer: SRULayer, x: Tensor, lengths: Tensor) -> Tensor:
    """The SRU equations, one unit vector and one step at a time, in plain Python."""
    batch, steps, _ = x.shape
    d_count, hidden = layer.directions, layer.hidden_size
    product_input = layer.projection(x) if layer.projection is not None else x
    u = (product_input @ layer.weight.t()).view(batch, steps, d_count, layer.num_matrices, hidden)
    out = torch.zeros(batch, steps, d_count, hidden, dtype=x.dtype)
    for b in range(batch):
        length = int(lengths[b])
        for d in range(d_count):
            c = torch.zeros(hidden, dtype=x.dtype)
            order = range(length) if d == 0 else range(length - 1, -1, -1)
            for t in order:
                highway = u[b, t, d, 3] if layer.highway_matrix else x[b, t].view(d_count, hidden)[d]
                f = torch.sigmoid(u[b, t, d, 1] + layer.v_forget[d] * c + layer.b_forget[d])
                r = torch.sigmoid(u[b, t, d, 2] + layer.v_reset[d] * c + layer.b_reset[d])
                c = f * c + (1 - f) * u[b, t, d, 0]
                out[b, t, d] = r * c + (1 - r) * highway * layer.alpha
    return out.reshape(batch, steps, d_count * hidden)


@pytest.mark.parametrize(
    ("input_size", "projection", "bidirectional"),
    [(5, None, True), (8, 3, True), (8, None, True), (4, None, False)],
)
def test_fused_sru_equals_the_reference_equations(
    input_size: int, projection: int | None, bidirectional: bool
) -> None:
    torch.manual_seed(2)
    layer = SRULayer(input_size, 4, layer="sru1", bidirectional=bidirectional,
                     projection_size=projection, projection_layer="proj1").double()  # fmt: skip
    x = torch.randn(3, 6, input_size, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([6, 4, 1])
    actual, expected = layer(x, lengths), sru_reference(layer, x, lengths)
    assert torch.allclose(actual, expected, atol=1e-12)
    grad = torch.randn_like(actual)
    inputs = [x, *layer.parameters()]
    for ours, theirs in zip(
        torch.autograd.grad((actual * grad).sum(), inputs),
        torch.autograd.grad((expected * grad).sum(), inputs),
        strict=True,
    ):
        assert torch.allclose(ours, theirs, atol=1e-10)


def test_padding_never_leaks_into_valid_frames() -> None:
    torch.manual_seed(3)
    layer = SRULayer(4, 3, layer="sru0").double()
    x = torch.randn(1, 5, 4, dtype=torch.double)
    padded = torch.cat([x, 100 * torch.randn(1, 4, 4, dtype=torch.double)], dim=1)
    alone = layer(x, torch.tensor([5]))
    in_batch = layer(padded, torch.tensor([5]))
    assert torch.allclose(alone, in_batch[:, :5], atol=1e-12)
    assert torch.all(in_batch[:, 5:] == 0)


def test_state_quantization_happens_inside_the_recurrence() -> None:
    torch.manual_seed(4)
    layer = SRULayer(4, 3, layer="sru0")
    x = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 5])
    float_out = layer(x, lengths)
    layer.state_quant.bits = 2
    quantized = layer(x, lengths)
    assert not torch.allclose(float_out, quantized)
    layer.state_quant.bits = 16
    assert torch.allclose(float_out, layer(x, lengths), atol=1e-3)
