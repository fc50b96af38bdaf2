"""Turning a calibrated, fake-quantized AcousticModel into an IntegerProgram.

The model must hold a complete bit assignment (every point quantized, the
fixed-precision extras too) and calibrated activation thresholds: the
integer model takes every scale from the quantizers, so it computes what
the fake-quantized model computes, in integers.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mohaq.export.layers.gru import lower_gru
from mohaq.export.layers.linear import lower_linear
from mohaq.export.layers.lstm import lower_lstm
from mohaq.export.layers.sru import THRESHOLD_BITS, lower_sru
from mohaq.export.lut import build_lookup_table
from mohaq.export.program import FORMAT, Domain, ExportError, IntegerProgram
from mohaq.export.reading import calibrated_threshold
from mohaq.models.acoustic import AcousticModel
from mohaq.models.gru import GRULayer
from mohaq.models.lstm import LSTMLayer
from mohaq.models.sru import SRULayer
from mohaq.quant.apply import current_bit_assignment, fixed_quantizers
from mohaq.quant.quantizer import FakeQuantizer


def check_exportable(model: AcousticModel) -> None:
    """Raises ExportError naming the float points or a float fixed-precision extra.

    Raises:
        ExportError: if a point has no bits or the extras are float.
    """
    assignment = current_bit_assignment(model)
    missing = [name for name in model.workload().names if name not in assignment.bits]
    if missing:
        raise ExportError(
            f"integer export needs bits for every quantization point; float: {missing}. "
            "Give a complete assignment (--bits with every point, or --uniform_bits)."
        )
    if any(q.bits is None for q in fixed_quantizers(model)):
        raise ExportError(
            "the fixed-precision extras (biases, recurrent vectors, states) are float; "
            "apply the assignment with fixed_bits set (MOHAQ: 16)"
        )


def _first_quantizer(model: AcousticModel, index: int) -> FakeQuantizer:
    """The activation quantizer that first reads the output of layer ``index``."""
    following = index + 1
    if following == len(model.layers):
        return model.output.input_quant
    if str(following) in model.projections:
        return model.projections[str(following)].input_quant
    layer = model.layers[following]
    if isinstance(layer, SRULayer) and layer.projection is not None:
        return layer.projection.input_quant
    return layer.input_quant


def lower_model(model: AcousticModel, *, rounding: str = "single") -> IntegerProgram:
    """The integer program of ``model`` at its current assignment and calibration.

    Args:
        model: calibrated, with a complete assignment applied.
        rounding: requantization of int32 values, ``"single"`` or ``"gemmlowp"``
            (see :func:`mohaq.export.fixed_point.requantize`).

    Raises:
        ExportError: if the model is not fully quantized and calibrated, or on
            an unknown rounding.
    """
    if not isinstance(model, AcousticModel):
        raise ExportError(f"lower_model takes an AcousticModel; got {type(model).__name__}")
    check_exportable(model)
    program = IntegerProgram({"format": FORMAT, "model": dict(model.hparams), "rounding": rounding})
    program.rounding  # noqa: B018 - validates the rounding before any work
    program.config["bits"] = current_bit_assignment(model).to_dict()
    for function in ("sigmoid", "tanh"):
        program.add_lookup_table(build_lookup_table(function))
    domain: Domain | None = None
    layers: list[dict[str, Any]] = []
    for index, layer in enumerate(model.layers):
        projection = model.projections[str(index)] if str(index) in model.projections else None
        if isinstance(layer, SRULayer):
            threshold = calibrated_threshold(
                _first_quantizer(model, index), THRESHOLD_BITS, f"{layer.layer}.h"
            )
            description, domain = lower_sru(layer, program, domain, threshold)
        elif isinstance(layer, GRULayer):
            description, domain = lower_gru(layer, program, domain, projection)
        elif isinstance(layer, LSTMLayer):
            description, domain = lower_lstm(layer, program, domain, projection)
        else:
            raise ExportError(f"no integer implementation of layer type {type(layer).__name__}")
        layers.append(description)
    layers.append(lower_linear(model.output, program, domain, None))
    program.config["layers"] = layers
    return program


def unwrap(module: nn.Module) -> AcousticModel:
    """The AcousticModel of an AcousticSystem (or the model itself)."""
    inner = getattr(module, "model", module)
    if not isinstance(inner, AcousticModel):
        raise ExportError(
            f"expected an AcousticSystem or AcousticModel; got {type(module).__name__}"
        )
    return inner
