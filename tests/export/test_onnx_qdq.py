"""The ONNX QDQ export run by onnxruntime against the fake-quantized model."""

from __future__ import annotations

import onnx
import pytest
import torch
from conftest import example_batch, make_model, valid_frames

from mohaq.export import lower_model
from mohaq.export.onnx_qdq import build_onnx, onnx_session

# onnxruntime and torch agree to float32 round-off except where a value sits on a
# rounding boundary of a quantizer; the bound is relative to the largest score.
TOLERANCE = 1e-4


def _ops(graph: onnx.GraphProto) -> list[str]:
    found = []
    for node in graph.node:
        found.append(node.op_type)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found += _ops(attribute.g)
    return found


@pytest.mark.parametrize(
    ("cell", "granularity", "bits"),
    [("sru", "layer", 8), ("gru", "operator", 4), ("lstm", "layer", 16), ("lstm", "operator", 8)],
)
def test_onnxruntime_matches_the_fake_quantized_model(
    cell: str, granularity: str, bits: int
) -> None:
    model = make_model(
        cell, granularity, lambda name: 2 if name.endswith("weight") and bits == 4 else bits
    )
    program = lower_model(model)
    onnx_model = build_onnx(program)
    features, lengths = example_batch()
    session = onnx_session(onnx_model.SerializeToString())
    (scores,) = session.run(["scores"], {"features": features.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        reference = model(features, lengths)
    valid = valid_frames(lengths, features.shape[1])
    difference = (reference - torch.from_numpy(scores)).abs()[valid].max()
    assert float(difference) <= TOLERANCE * float(reference.abs()[valid].max())
    # Every quantized run-time tensor has a QuantizeLinear, every stored one a DequantizeLinear.
    ops = _ops(onnx_model.graph)
    runtime_points = [
        n
        for n, e in program.config["quantizers"].items()
        if e["role"] != "carry" and n not in program.tensors
    ]
    assert ops.count("QuantizeLinear") >= len(runtime_points)
    assert ops.count("DequantizeLinear") >= len(program.quantized_names(stored=True)) + ops.count(
        "QuantizeLinear"
    )
    assert "Scan" in ops


def test_sub_byte_points_are_clipped_inside_int8() -> None:
    model = make_model("sru", "layer", 4)
    ops = _ops(build_onnx(lower_model(model)).graph)
    # Four 4-bit activation points clip; the 16-bit states (one per layer and direction) do not.
    assert ops.count("Clip") == 4 and ops.count("QuantizeLinear") == 4 + 2 * 2
