"""The scripted GRU/LSTM loops with quantization inside, against the cell equations
written out one sequence, direction and step at a time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from mohaq.models.cell_cpu import cpu_cell_available
from mohaq.models.gru import GRU_OPERATORS, GRULayer
from mohaq.models.lstm import LSTM_OPERATORS, LSTMLayer
from mohaq.models.recurrent_base import StepwiseRecurrentLayer
from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.calibration import observing
from mohaq.quant.functional import fake_quantize
from mohaq.quant.quantizer import FakeQuantizer

Quantize = Callable[[str, Tensor], Tensor]


def _quantizer(layer: StepwiseRecurrentLayer, point: str) -> FakeQuantizer | None:
    if point in ("h", "c"):
        return getattr(layer, {"h": "hidden_quant", "c": "cell_quant"}[point])
    if layer.granularity == "operator":
        return layer.operator_quants[point]
    return None


def _point_quantizer(layer: StepwiseRecurrentLayer) -> Quantize:
    """Fake quantization of a point with its quantizer's calibrated scale."""

    def quantize(point: str, value: Tensor) -> Tensor:
        quantizer = _quantizer(layer, point)
        if quantizer is None or quantizer.bits is None:
            return value
        scale, bits = quantizer.quant_params()  # type: ignore[misc]
        return fake_quantize(value, scale, bits)

    return quantize


def _gru_step(q: Quantize, ih: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, _c: Tensor):
    hidden = h.shape[-1]
    h_in = q("h", h)
    hh = q("hh", w_hh @ h_in + b_hh)
    r = q("r", torch.sigmoid(ih[:hidden] + hh[:hidden]))
    z = q("z", torch.sigmoid(ih[hidden : 2 * hidden] + hh[hidden : 2 * hidden]))
    n = q("n", torch.tanh(ih[2 * hidden :] + q("rhn", r * hh[2 * hidden :])))
    return q("zn", (1 - z) * n) + q("zh", z * h_in), _c


def _lstm_step(q: Quantize, ih: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, c: Tensor):
    hidden = h.shape[-1]
    gates = ih + q("hh", w_hh @ q("h", h) + b_hh)
    i, f = q("i", torch.sigmoid(gates[:hidden])), q("f", torch.sigmoid(gates[hidden : 2 * hidden]))
    g = q("g", torch.tanh(gates[2 * hidden : 3 * hidden]))
    o = q("o", torch.sigmoid(gates[3 * hidden :]))
    c = q("c", q("fc", f * c) + q("ig", i * g))
    return q("oc", o * q("tanh_c", torch.tanh(c))), c


def reference(layer: StepwiseRecurrentLayer, x: Tensor, lengths: Tensor) -> Tensor:
    """The layer's equations with every point quantized where it is, in plain Python."""
    step = _gru_step if isinstance(layer, GRULayer) else _lstm_step
    q = _point_quantizer(layer)
    hidden, directions = layer.hidden_size, layer.directions
    w_ih, w_hh = layer.quantized_weights()
    ih_all = layer.input_quant(x) @ w_ih.t() + layer.bias_ih
    if layer.granularity == "operator":
        ih_all = layer.operator_quants["ih"](ih_all)
    rows = layer.gates * hidden
    out = torch.zeros(x.shape[0], x.shape[1], directions, hidden, dtype=x.dtype)
    for b in range(x.shape[0]):
        length = int(lengths[b])
        for d in range(directions):
            h = torch.zeros(hidden, dtype=x.dtype)
            c = torch.zeros(hidden, dtype=x.dtype)
            block = slice(d * rows, (d + 1) * rows)
            for t in range(length) if d == 0 else range(length - 1, -1, -1):
                h, c = step(q, ih_all[b, t, block], h, w_hh[block], layer.bias_hh[block], c)
                out[b, t, d] = h
    return out.reshape(x.shape[0], x.shape[1], directions * hidden)


def _calibrated(layer: StepwiseRecurrentLayer, assignment: dict[str, int]) -> None:
    torch.manual_seed(11)
    with observing(layer), torch.no_grad():
        for steps in (6, 4):
            layer(
                torch.randn(1, steps, layer.input_size, dtype=torch.float64), torch.tensor([steps])
            )
    apply_bit_assignment(layer, BitAssignment(assignment), fixed_bits=None)


CASES = [
    (GRULayer, "operator", {"gru0.x": 8, "gru0.w_ih": 6, "gru0.w_hh": 5, "gru0.h": 6,
                            **{f"gru0.{op}": 4 for op in GRU_OPERATORS}}),
    (LSTMLayer, "operator", {"lstm0.x": 8, "lstm0.w_ih": 6, "lstm0.w_hh": 5, "lstm0.h": 6,
                             "lstm0.c": 5, **{f"lstm0.{op}": 4 for op in LSTM_OPERATORS}}),
    (GRULayer, "layer", {"gru0.weight": 4, "gru0.input": 6}),
    (LSTMLayer, "layer", {"lstm0.weight": 4, "lstm0.input": 6}),
]  # fmt: skip


KERNELS = [
    pytest.param(
        "cpu", marks=pytest.mark.skipif(not cpu_cell_available(torch.zeros(1)), reason="no C++")
    ),
    "script",
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("cls", "granularity", "assignment"), CASES)
def test_quantized_loop_equals_the_equations_in_values_and_gradients(
    cls: type[StepwiseRecurrentLayer], granularity: str, assignment: dict[str, int], kernel: str
) -> None:
    torch.manual_seed(0)
    name = "gru0" if cls is GRULayer else "lstm0"
    layer = cls(3, 4, layer=name, granularity=granularity, kernel=kernel).double()  # type: ignore[call-arg]
    _calibrated(layer, assignment)
    if granularity == "layer":  # the fixed-precision states, at a coarse precision
        for state in ("hidden_quant", "cell_quant"):
            if hasattr(layer, state):
                getattr(layer, state).bits = 5
    x = torch.randn(3, 6, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 3, 1])
    actual, expected = layer(x, lengths), reference(layer, x, lengths)
    assert torch.allclose(actual, expected, atol=1e-12, rtol=0)
    assert torch.all(actual[1, 3:] == 0) and torch.all(actual[2, 1:] == 0)
    grad = torch.randn_like(actual)
    inputs = [x, layer.weight, layer.bias_ih, layer.bias_hh]
    ours = torch.autograd.grad((actual * grad).sum(), inputs)
    theirs = torch.autograd.grad((expected * grad).sum(), inputs)
    for label, a, e in zip(("x", "weight", "bias_ih", "bias_hh"), ours, theirs, strict=True):
        assert torch.allclose(a, e, atol=1e-10, rtol=0), label
    # Quantization did act: the float layer differs.
    apply_bit_assignment(layer, BitAssignment(), fixed_bits=None)
    assert not torch.allclose(layer(x, lengths), actual, atol=1e-3)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cls", [GRULayer, LSTMLayer])
def test_calibration_records_each_loop_point_once_per_utterance(
    cls: type[StepwiseRecurrentLayer], kernel: str
) -> None:
    torch.manual_seed(1)
    layer = cls(3, 4, layer="l0", granularity="operator", kernel=kernel)  # type: ignore[call-arg]
    utterances = [torch.randn(1, steps, 3) for steps in (5, 2, 7)]
    with observing(layer), torch.no_grad():
        for x in utterances:
            layer(x, torch.tensor([x.shape[1]]))
    recorded = [q for q in layer.operator_quants.values()] + [layer.hidden_quant]
    assert all(q.num_observed == 3 for q in recorded)
    # h's point sees every state fed back: each direction's outputs but its last.
    layer = cls(3, 4, layer="l0", granularity="operator", activation_clipping="minmax",
                kernel=kernel)  # type: ignore[call-arg]  # fmt: skip
    with observing(layer), torch.no_grad():
        outputs = layer(utterances[2], torch.tensor([7])).view(7, 2, 4)
    fed_back = torch.cat((outputs[:-1, 0], outputs[1:, 1])).abs().max()
    assert float(layer.hidden_quant.threshold_for(8)) == float(fed_back)
