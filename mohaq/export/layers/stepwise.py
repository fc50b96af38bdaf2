"""Plumbing shared by the integer GRU and LSTM layers.

As in :mod:`mohaq.models.recurrent_base`: the input product runs over all
steps at once, the recurrent product and the gates per step; direction 1
reads its inputs reversed within each sequence's length, and padded steps
carry the state unchanged. Lowering reads the layer's input point, weights
(one point over ``[W_ih | W_hh]`` at layer granularity, ``w_ih`` and ``w_hh``
at operator granularity), 16-bit biases, the hidden-state quantizer and the
projection in front, if any; each cell adds its own requantization constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mohaq.export.fixed_point import (
    QuantizedMultiplier,
    multiply_by_quantized_multiplier_wide,
)
from mohaq.export.layers.linear import (
    InputPoint,
    IntegerLinear,
    bias_bound,
    lower_linear,
    matmul_description,
    register_input,
)
from mohaq.export.program import Domain, IntegerProgram
from mohaq.export.reading import integer_tensor, runtime_quantization
from mohaq.models.quant_linear import QuantLinear
from mohaq.models.recurrent_base import StepwiseRecurrentLayer
from mohaq.models.sequence import reverse_within_lengths, step_mask

# GRU and LSTM hidden states lie in (-1, 1); between steps and layers they
# travel as int32 with 28 fraction bits (room up to 8). Their consumers (the
# 16-bit hidden-state point, the next layer's input point) round them once
# more; a coarser carry would make that a double rounding (a 2^-14 carry is
# coarser than the 16-bit hidden-state point itself).
CARRY_FRAC_BITS = 28
CARRY_BITS = 32


@dataclass
class StepwiseScales:
    """What a cell's lowering needs from the shared part.

    Attributes:
        ih: accumulator scale of the input product per row, ``(D, G*H)``.
        hh: accumulator scale of the recurrent product per row, ``(D, G*H)``.
        hidden: the hidden-state point's scale (``h`` fed to ``W_hh``).
        operator: whether the layer has operator-granularity points.
    """

    ih: Tensor
    hh: Tensor
    hidden: float
    operator: bool


def lower_stepwise(
    layer: StepwiseRecurrentLayer,
    program: IntegerProgram,
    source: Domain | None,
    projection: QuantLinear | None,
    kind: str,
) -> tuple[dict[str, Any], StepwiseScales]:
    """Registers the parts every GRU/LSTM layer has; returns its description and scales."""
    name, operator = layer.layer, layer.granularity == "operator"
    input_name = f"{name}.x" if operator else f"{name}.input"
    description: dict[str, Any] = {"projection": None}
    if projection is not None:
        target = Domain(input_name, *runtime_quantization(layer.input_quant, input_name))
        description["projection"] = lower_linear(projection, program, source, target)
    product = register_input(program, layer.input_quant, input_name)
    if projection is None and source is not None:
        program.add_multiplier(f"{name}.rq.input", source.scale / product.scale)
    split = layer.input_size
    if operator:
        parts = {
            "w_ih": integer_tensor(layer.w_ih_quant, layer.weight[:, :split], f"{name}.w_ih"),
            "w_hh": integer_tensor(layer.w_hh_quant, layer.weight[:, split:], f"{name}.w_hh"),
        }
        for part, (values, scale, bits) in parts.items():
            program.add_quantized(f"{name}.{part}", values, bits, scale, role="weight", point=True)
        weight_scales = parts["w_ih"][1], parts["w_hh"][1]
        weight_bits = parts["w_ih"][2], parts["w_hh"][2]
    else:
        values, scale, bits = integer_tensor(layer.weight_quant, layer.weight, f"{name}.weight")
        program.add_quantized(f"{name}.weight", values, bits, scale, role="weight", point=True)
        weight_scales, weight_bits = (scale, scale), (bits, bits)
    hidden_scale, hidden_bits = runtime_quantization(layer.hidden_quant, f"{name}.h")
    program.add_scale(f"{name}.h", hidden_bits, hidden_scale, role="state", point=operator)
    rows = layer.weight.shape[0]
    shape = (layer.directions, layer.gates * layer.hidden_size)
    ih = (weight_scales[0].expand(rows) * product.scale).reshape(shape)
    hh = (weight_scales[1].expand(rows) * hidden_scale).reshape(shape)
    bounds = []
    for suffix, accumulator in (("ih", ih), ("hh", hh)):
        bias, scale, bits = integer_tensor(
            layer.bias_quant, getattr(layer, f"bias_{suffix}"), f"{name}.bias_{suffix}"
        )
        program.add_quantized(f"{name}.bias_{suffix}", bias, bits, scale, role="fixed", point=False)
        multiplier = scale / accumulator.reshape(-1)
        program.add_multiplier(f"{name}.rq.bias_{suffix}", multiplier)
        bounds.append(bias_bound(bias, multiplier))
    description.update(
        kind=kind,
        name=name,
        granularity=layer.granularity,
        directions=layer.directions,
        hidden=layer.hidden_size,
        gates=layer.gates,
        input_point=input_name,
        source=None if source is None else source.name,
        accumulator=matmul_description(weight_bits[0], product.bits, layer.input_size, bounds[0]),
        recurrent_accumulator=matmul_description(
            weight_bits[1], hidden_bits, layer.hidden_size, bounds[1]
        ),
    )
    return description, StepwiseScales(ih, hh, hidden_scale, operator)


def register_operators(layer: StepwiseRecurrentLayer, program: IntegerProgram) -> dict[str, float]:
    """Registers every operator point's scale; returns operator -> scale."""
    scales = {}
    for op, quantizer in layer.operator_quants.items():
        scale, bits = runtime_quantization(quantizer, f"{layer.layer}.{op}")
        program.add_scale(f"{layer.layer}.{op}", bits, scale, role="operator", point=True)
        scales[op] = scale
    return scales


def gate(multiplier: QuantizedMultiplier, index: int, hidden: int) -> QuantizedMultiplier:
    """The multiplier of gate ``index`` from a per-row ``(D, G*H)`` one (scalars pass through)."""
    if multiplier.m0.dim() == 0:
        return multiplier
    window = slice(index * hidden, (index + 1) * hidden)
    return QuantizedMultiplier(multiplier.m0[..., window], multiplier.shift[..., window])


def rq(x: Tensor, multiplier: QuantizedMultiplier) -> Tensor:
    """Exact element-wise requantization (int64)."""
    return multiply_by_quantized_multiplier_wide(x, multiplier)


class IntegerStepwise:
    """The integer products and the time loop of a GRU/LSTM layer; cells implement ``step``."""

    #: number of recurrent state tensors (GRU: h; LSTM: h and c)
    states = 1

    def __init__(self, program: IntegerProgram, description: dict[str, Any]) -> None:
        name = self.name = description["name"]
        self.program = program
        self.rounding = program.rounding
        self.directions, self.hidden = description["directions"], description["hidden"]
        self.gates = description["gates"]
        self.operator = description["granularity"] == "operator"
        if self.operator:
            w_ih, w_hh = program.values(f"{name}.w_ih"), program.values(f"{name}.w_hh")
        else:
            weight = program.values(f"{name}.weight")
            w_ih, w_hh = weight.split([weight.shape[1] - self.hidden, self.hidden], dim=1)
        self.wide_ih = description["accumulator"]["dtype"] == "int64"
        self.wide_hh = description["recurrent_accumulator"]["dtype"] == "int64"
        self.w_ih_t = w_ih.t().contiguous().to(torch.int64 if self.wide_ih else torch.int32)
        per_direction = w_hh.view(self.directions, self.gates * self.hidden, self.hidden)
        self.w_hh_t = (
            per_direction.transpose(1, 2)
            .contiguous()
            .to(torch.int64 if self.wide_hh else torch.int32)
        )
        shape = (self.directions, self.gates * self.hidden)
        self.bias_ih = rq(
            program.values(f"{name}.bias_ih"), program.multiplier(f"{name}.rq.bias_ih")
        ).view(shape)
        self.bias_hh = rq(
            program.values(f"{name}.bias_hh"), program.multiplier(f"{name}.rq.bias_hh")
        ).view(shape)
        self.projection = (
            IntegerLinear(program, description["projection"]) if description["projection"] else None
        )
        self.input_point = description["input_point"]
        first = description["source"] is None
        self.input_point_quantizer = (
            None
            if self.projection is not None
            else InputPoint(program, self.input_point, None if first else f"{name}.rq.input")
        )
        self.hidden_bits = program.bits(f"{name}.h")
        self.sigmoid = program.lookup_table("sigmoid")
        self.tanh = program.lookup_table("tanh")

    def multiplier(self, key: str) -> QuantizedMultiplier:
        return self.program.multiplier(f"{self.name}.rq.{key}")

    def bits(self, op: str) -> int:
        return self.program.bits(f"{self.name}.{op}")

    def _product_input(self, x: Tensor) -> Tensor:
        if self.projection is not None:
            return self.projection(x)
        assert self.input_point_quantizer is not None
        return self.input_point_quantizer(x)

    def input_products(self, x: Tensor, lengths: Tensor) -> Tensor:
        """All steps' ``W_ih x + b_ih`` in accumulator units, ``(T, B, D, G*H)``, direction 1 reversed."""
        batch, steps = x.shape[:2]
        x_q = self._product_input(x)
        acc = torch.matmul(x_q.to(self.w_ih_t.dtype), self.w_ih_t).to(torch.int64)
        acc = acc.view(batch, steps, self.directions, -1) + self.bias_ih
        if self.directions == 2:
            acc = torch.stack((acc[:, :, 0], reverse_within_lengths(acc[:, :, 1], lengths)), dim=2)
        return acc.transpose(0, 1)

    def recurrent_product(self, h_in: Tensor) -> Tensor:
        """``W_hh h_in + b_hh`` in accumulator units, ``(B, D, G*H)``."""
        acc = torch.matmul(h_in.transpose(0, 1).to(self.w_hh_t.dtype), self.w_hh_t).to(torch.int64)
        return acc.transpose(0, 1) + self.bias_hh

    def step(self, ih: Tensor, states: list[Tensor]) -> list[Tensor]:
        """One step: ``ih`` ``(B, D, G*H)`` and the states -> the new states (h first)."""
        raise NotImplementedError

    def __call__(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, input)`` integers (features for the first layer) -> ``(B, T, D*H)`` integers."""
        batch, steps = x.shape[:2]
        ih_all = self.prepare(self.input_products(x, lengths))
        masks = step_mask(lengths, steps, torch.bool).t()[:, :, None, None]  # (T, B, 1, 1)
        states = [
            torch.zeros(batch, self.directions, self.hidden, dtype=torch.int64)
            for _ in range(self.states)
        ]
        outputs = []
        for t in range(steps):
            new = self.step(ih_all[t], states)
            states = [torch.where(masks[t], n, s) for n, s in zip(new, states, strict=True)]
            outputs.append(states[0] * masks[t])
        h = torch.stack(outputs, dim=1)  # (B, T, D, H)
        if self.directions == 2:
            h = torch.stack((h[:, :, 0], reverse_within_lengths(h[:, :, 1], lengths)), dim=2)
        return h.reshape(batch, steps, self.directions * self.hidden)

    def prepare(self, ih_all: Tensor) -> Tensor:
        """Whole-sequence work on the input products before the loop (operator points)."""
        return ih_all
