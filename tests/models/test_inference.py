"""Evaluation mode for the search: inference mode, weights quantized once, packed once."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mohaq.models import packed_linear
from mohaq.models.acoustic import AcousticModel
from mohaq.models.packed_linear import PackedLinear
from mohaq.quant import quantizer as quantizer_module
from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.calibration import observing

MODELS = [("sru", "layer"), ("gru", "layer"), ("lstm", "layer"), ("gru", "operator")]


def _quantized_model(cell: str, granularity: str) -> AcousticModel:
    torch.manual_seed(0)
    model = AcousticModel(num_features=5, num_classes=4, cell=cell, hidden_size=6, num_layers=2,
                          projection_size=3, granularity=granularity).eval()  # fmt: skip
    with observing(model), torch.no_grad():
        for steps in (7, 4):
            model(torch.randn(1, steps, 5), torch.tensor([steps]))
    bits = [2, 4, 8, 16]
    names = model.workload().names
    apply_bit_assignment(model, BitAssignment({n: bits[i % 4] for i, n in enumerate(names)}))
    return model


@pytest.mark.parametrize(("cell", "granularity"), MODELS)
def test_inference_mode_gives_the_no_grad_output(cell: str, granularity: str) -> None:
    model = _quantized_model(cell, granularity)
    features, lengths = torch.randn(3, 8, 5), torch.tensor([8, 5, 2])
    with torch.no_grad():
        expected = model(features, lengths)
    with torch.inference_mode():
        actual = model(features, lengths)
        again = model(features, lengths)
    assert torch.equal(actual, expected) and torch.equal(again, expected)
    apply_bit_assignment(model, BitAssignment())
    with torch.no_grad():
        assert not torch.allclose(model(features, lengths), expected, atol=1e-3)


@pytest.mark.parametrize(("cell", "granularity"), MODELS)
def test_weights_are_quantized_once_per_assignment_not_per_batch(
    cell: str, granularity: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _quantized_model(cell, granularity)
    weights = [
        m.weight for m in model.modules() if isinstance(getattr(m, "weight", None), nn.Parameter)
    ]
    quantized: list[int] = []  # bits of each weight quantization
    original = quantizer_module.fake_quantize

    def counting(x: torch.Tensor, scale: torch.Tensor | float, bits: int) -> torch.Tensor:
        if any(x is w or x._base is w for w in weights):  # a weight or a slice of one
            quantized.append(bits)
        return original(x, scale, bits)

    monkeypatch.setattr(quantizer_module, "fake_quantize", counting)
    weight_points = [p for p in model.workload().points if p.kind == "weight"]
    with torch.inference_mode():
        model(torch.randn(2, 6, 5), torch.tensor([6, 3]))
        assert len(quantized) == len(weight_points)
        model(torch.randn(2, 9, 5), torch.tensor([9, 9]))
        model(torch.randn(1, 4, 5), torch.tensor([4]))
    assert len(quantized) == len(weight_points)
    name = weight_points[0].name
    apply_bit_assignment(model, BitAssignment({name: 3}))
    with torch.inference_mode():
        model(torch.randn(2, 6, 5), torch.tensor([6, 3]))
    assert quantized[len(weight_points) :] == [3]  # a new assignment quantizes anew


@pytest.mark.skipif(not packed_linear.ONEDNN_LINEAR, reason="torch without oneDNN")
def test_packed_product_packs_once_and_follows_the_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    packs: list[int] = []
    reorder = torch.ops.mkldnn._reorder_linear_weight

    def counting(weight: torch.Tensor, rows: int) -> torch.Tensor:
        packs.append(rows)
        return reorder(weight, rows)

    monkeypatch.setattr(packed_linear, "_reorder", counting)
    product = PackedLinear()
    weight, bias = torch.randn(7, 5), torch.randn(7)
    x = torch.randn(2, 3, 5)
    with torch.inference_mode():
        first = product(x, weight, bias)
        product(torch.randn(4, 5), weight, bias)
    assert torch.allclose(first, F.linear(x, weight, bias), atol=1e-5)
    assert len(packs) == 1
    with torch.no_grad():
        weight.mul_(2.0)  # changed in place: its version moves on
        assert torch.allclose(product(x, weight, bias), F.linear(x, weight, bias), atol=1e-5)
        other = torch.randn(7, 5)
        assert torch.allclose(product(x, other), F.linear(x, other), atol=1e-5)
    assert len(packs) == 3
    # Training does not pack (its weight changes every step); copies never share a cache.
    trained = torch.randn(7, 5, requires_grad=True)
    product(x, trained).sum().backward()
    assert trained.grad is not None and len(packs) == 3
    assert copy.deepcopy(product)._packed == {}


@pytest.mark.skipif(not packed_linear.ONEDNN_LINEAR, reason="torch without oneDNN")
def test_packed_product_keeps_several_weights_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    packs: list[int] = []
    reorder = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(
        packed_linear, "_reorder", lambda w, rows: packs.append(rows) or reorder(w, rows)
    )
    product = PackedLinear(capacity=2)
    x = torch.randn(3, 5)
    a, b, c = (torch.randn(7, 5) for _ in range(3))
    with torch.inference_mode():
        for weight in (a, b, a, b, a):  # two bit widths of one weight, alternating
            assert torch.allclose(product(x, weight), F.linear(x, weight), atol=1e-5)
        assert len(packs) == 2
        product(x, c)  # evicts the least recently used (b)
        product(x, a)
        assert len(packs) == 3
        product(x, b)
    assert len(packs) == 4


@pytest.mark.skipif(not packed_linear.ONEDNN_LINEAR, reason="torch without oneDNN")
@pytest.mark.parametrize("bias", [True, False])
def test_training_products_through_onednn_give_linear_gradients(
    bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packed_linear, "TRAINING_ONEDNN_MIN_WEIGHT", 0)  # oneDNN at any size
    calls: list[int] = []
    apply = packed_linear._OneDNNLinear.apply
    monkeypatch.setattr(
        packed_linear._OneDNNLinear, "apply", lambda *a: calls.append(1) or apply(*a)
    )
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, requires_grad=True)
    weight = torch.randn(7, 5, requires_grad=True)
    b = torch.randn(7, requires_grad=True) if bias else None
    grad = torch.randn(2, 3, 7)
    ours = PackedLinear()(x, weight, b)
    inputs = [x, weight] + ([b] if b is not None else [])
    actual = torch.autograd.grad((ours * grad).sum(), inputs)
    expected = torch.autograd.grad((F.linear(x, weight, b) * grad).sum(), inputs)
    assert torch.allclose(ours, F.linear(x, weight, b), atol=1e-5)
    for a, e in zip(actual, expected, strict=True):
        assert torch.allclose(a, e, atol=1e-5)
    assert calls == [1]
    # Under the size threshold training takes F.linear (faster there by MKL).
    monkeypatch.setattr(packed_linear, "TRAINING_ONEDNN_MIN_WEIGHT", weight.numel() + 1)
    PackedLinear()(x, weight, b).sum().backward()
    assert calls == [1]
