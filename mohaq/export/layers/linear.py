"""Integer fully connected layer: the projections and the output layer.

``acc = W_q x_q + b_acc`` in int32, or int64 when the accumulator bound
``K 2^(b_w-1) 2^(b_x-1) + |b_acc|`` exceeds int32. The 16-bit bias is moved to
the accumulator's scale ``s_w s_x`` once, when the layer is built. The input
arrives in the previous layer's integer domain and is requantized to this
layer's input point; the first layer's input is the float feature vector,
quantized here (one of the two documented float steps). The accumulator
either moves to the next point's scale or, for the output layer, is
dequantized to float scores (the other one).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mohaq.export.fixed_point import (
    accumulator_bound,
    matmul_accumulator_bits,
    multiply_by_quantized_multiplier_wide,
    needs_wide_accumulator,
    requantize,
    saturate,
)
from mohaq.export.program import Domain, IntegerProgram
from mohaq.export.reading import integer_tensor, runtime_quantization
from mohaq.models.quant_linear import QuantLinear


def register_input(
    program: IntegerProgram, quantizer: Any, name: str, *, point: bool = True
) -> Domain:
    """Registers an activation point's scale and returns its domain."""
    scale, bits = runtime_quantization(quantizer, name)
    program.add_scale(name, bits, scale, role="activation", point=point)
    return program.domain(name)


def matmul_description(
    weight_bits: int, input_bits: int, depth: int, bias_bound: int = 0
) -> dict[str, Any]:
    """The accumulator of a product: bound in bits (INTEGER.md) and the integer type used."""
    wide = needs_wide_accumulator(weight_bits, input_bits, depth, bias_bound)
    return {
        "weight_bits": weight_bits,
        "input_bits": input_bits,
        "depth": depth,
        "bound_bits": max(
            matmul_accumulator_bits(weight_bits, input_bits, depth),
            math.ceil(math.log2(accumulator_bound(weight_bits, input_bits, depth, bias_bound) + 1))
            + 1,
        ),
        "dtype": "int64" if wide else "int32",
    }


def bias_bound(values: Tensor, multiplier: Tensor) -> int:
    """A bound on ``|bias|`` in accumulator units (+1 for rounding)."""
    if values.numel() == 0:
        return 0
    return int(math.ceil(float((values.abs().to(torch.float64) * multiplier).max()))) + 1


def lower_linear(
    module: QuantLinear, program: IntegerProgram, source: Domain | None, target: Domain | None
) -> dict[str, Any]:
    """Registers a QuantLinear's integers and constants; returns its layer description.

    Args:
        module: the fake-quantized layer.
        program: where tensors go.
        source: the domain of the layer's input (None: float features).
        target: the point the output is requantized to (None: dequantized scores).
    """
    name = module.layer
    weight, weight_scale, weight_bits = integer_tensor(
        module.weight_quant, module.weight, f"{name}.weight"
    )
    program.add_quantized(
        f"{name}.weight", weight, weight_bits, weight_scale, role="weight", point=True
    )
    domain = register_input(program, module.input_quant, f"{name}.input")
    accumulator_scale = weight_scale * domain.scale
    bound = 0
    if module.bias is not None:
        bias, bias_scale, bias_bits = integer_tensor(module.bias_quant, module.bias, f"{name}.bias")
        program.add_quantized(
            f"{name}.bias", bias, bias_bits, bias_scale, role="fixed", point=False
        )
        program.add_multiplier(f"{name}.rq.bias", bias_scale / accumulator_scale)
        bound = bias_bound(bias, bias_scale / accumulator_scale)
    if source is not None:
        program.add_multiplier(f"{name}.rq.input", source.scale / domain.scale)
    if target is not None:
        program.add_multiplier(f"{name}.rq.output", accumulator_scale / target.scale)
    else:
        program.tensors[f"{name}.output.scale"] = torch.as_tensor(
            accumulator_scale, dtype=torch.float64
        )
    return {
        "kind": "linear",
        "name": name,
        "source": None if source is None else source.name,
        "target": None if target is None else target.name,
        "bias": module.bias is not None,
        "accumulator": matmul_description(weight_bits, domain.bits, module.in_features, bound),
    }


class InputPoint:
    """Brings a layer's input to its input point's integers.

    From the previous layer's integer domain by a requantization, or, for the
    model's first layer, from float features by ``round(x / s_x)`` (the
    documented float step on the input side).

    Args:
        program: the integer model.
        point: the input point's name.
        multiplier: the requantization from the previous domain; None for features.
    """

    def __init__(self, program: IntegerProgram, point: str, multiplier: str | None) -> None:
        self.rounding = program.rounding
        self.bits = program.bits(point)
        self.multiplier = program.multiplier(multiplier) if multiplier is not None else None
        self.feature_scale = float(program.scale(point)) if multiplier is None else None

    def __call__(self, x: Tensor) -> Tensor:
        if self.multiplier is None:
            assert self.feature_scale is not None
            levels = torch.round(x.to(torch.float32) / self.feature_scale).to(torch.int64)
            return saturate(levels, self.bits)
        return saturate(
            requantize(x, self.multiplier, wide=False, rounding=self.rounding), self.bits
        )


class IntegerLinear:
    """Runs a lowered linear layer on integers.

    Args:
        program: the integer model.
        description: the layer's entry from :func:`lower_linear`.
    """

    def __init__(self, program: IntegerProgram, description: dict[str, Any]) -> None:
        name = description["name"]
        self.name = name
        self.rounding = program.rounding
        self.wide = description["accumulator"]["dtype"] == "int64"
        dtype = torch.int64 if self.wide else torch.int32
        self.weight_t = program.values(f"{name}.weight").t().contiguous().to(dtype)
        source = description["source"]
        self.quantize_input = InputPoint(
            program, f"{name}.input", f"{name}.rq.input" if source is not None else None
        )
        self.bias = None
        if description["bias"]:
            self.bias = multiply_by_quantized_multiplier_wide(
                program.values(f"{name}.bias"), program.multiplier(f"{name}.rq.bias")
            )
        self.target_bits = program.bits(description["target"]) if description["target"] else None
        self.output_multiplier = (
            program.multiplier(f"{name}.rq.output") if description["target"] is not None else None
        )
        self.output_scale = (
            program.scale(f"{name}.output").to(torch.float32)
            if description["target"] is None
            else None
        )

    def accumulate(self, x_q: Tensor) -> Tensor:
        """``W x_q + b`` in the accumulator's integer type, returned as int64."""
        acc = torch.matmul(x_q.to(self.weight_t.dtype), self.weight_t).to(torch.int64)
        return acc if self.bias is None else acc + self.bias

    def __call__(self, x: Tensor) -> Tensor:
        """Input integers (or features) -> the next point's integers, or float scores."""
        acc = self.accumulate(self.quantize_input(x))
        if self.output_multiplier is None:
            assert self.output_scale is not None
            return acc.to(torch.float64).mul(self.output_scale.to(torch.float64)).to(torch.float32)
        assert self.target_bits is not None
        return saturate(
            requantize(acc, self.output_multiplier, wide=self.wide, rounding=self.rounding),
            self.target_bits,
        )
