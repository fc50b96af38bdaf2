"""Integer SRU layer (the equations of :mod:`mohaq.models.sru`).

Per direction, with ``U = W x_q`` from one integer product over all steps::

    f_t = sigmoid(U_f + v_f c_{t-1} + b_f)        24 fraction bits, from the sigmoid table
    c_t = f_t c_{t-1} + (1 - f_t) U_c            16-bit state at its calibrated scale
    r_t = sigmoid(U_r + v_r c_{t-1} + b_r)        24 fraction bits
    h_t = r_t c_t + (1 - r_t) highway_t           24-bit output carry

Fixed-point formats: gate pre-activations carry 24 fraction bits (the table
input, :mod:`mohaq.export.lut`); ``U_c`` is requantized to the state's scale
with 16 more fraction bits and ``U_f``, ``U_r`` to the pre-activation format;
``v c`` is a 16x16-bit product requantized to the pre-activation format; the
state update ``f c + (1 - f) U_c`` is one rounding shift, as the fake
quantizer rounds the float update once. The
highway term (``alpha`` times the 4th product, the quantized product input or
the layer's own input) and ``h`` share the output carry's scale: 24 bits over
the next layer's calibrated input threshold with a factor 2 of headroom (in
float the SRU output is not quantized; its consumer is, and a 24-bit carry
keeps that consumer's rounding a single one in effect). Element-wise
products are formed in int64 and requantized exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mohaq.export.fixed_point import (
    QuantizedMultiplier,
    multiply_by_quantized_multiplier_wide,
    requantize,
    rescale_sum,
    rounding_divide_by_pot,
    saturate,
)
from mohaq.export.layers.linear import (
    InputPoint,
    IntegerLinear,
    lower_linear,
    matmul_description,
    register_input,
)
from mohaq.export.lut import OUTPUT_FRAC_BITS, PREACTIVATION_FRAC_BITS
from mohaq.export.program import Domain, IntegerProgram
from mohaq.export.reading import integer_tensor, runtime_quantization
from mohaq.models.sequence import step_mask
from mohaq.models.sru import SRULayer

# The output travels as a 24-bit integer (in int32): its consumers (the next
# input point, 2 to 16 bits, and the next highway) round it once more, and at
# 16 bits that second rounding would flip about 1% of 8-bit inputs, which the
# float output of the fake-quantized layer never does.
CARRY_BITS = 24
# The carry's threshold: the consumer's calibrated 16-bit threshold x this headroom.
THRESHOLD_BITS = 16
CARRY_HEADROOM = 2.0
# Clamps that keep every element-wise product inside int64 with room for
# rescale_sum's 20 extra bits: the candidate at 16 x the 16-bit state range,
# the highway at 4 x the carry range.
CANDIDATE_LIMIT = 2 ** (15 + 4)
# The candidate U_c keeps this many bits below the state's step until the one
# rounding of the state update (rounding it to the state's step first would
# move that rounding in a (1 - f) / 2 share of steps).
CANDIDATE_FRAC_BITS = 16
HIGHWAY_LIMIT = 2 ** (CARRY_BITS + 1)
VECTORS = ("v_forget", "v_reset", "b_forget", "b_reset")
ONE = 2**OUTPUT_FRAC_BITS


def _highway_kind(layer: SRULayer) -> str:
    if layer.highway_matrix:
        return "matrix"
    return "layer_input" if layer.projection is not None else "product_input"


def lower_sru(
    layer: SRULayer, program: IntegerProgram, source: Domain | None, output_threshold: float
) -> tuple[dict[str, Any], Domain]:
    """Registers an SRU layer (and its projection); returns its description and output domain.

    Args:
        layer: the fake-quantized layer.
        program: where tensors go.
        source: the domain of the layer input (None: float features).
        output_threshold: the calibrated 16-bit threshold of the output's consumer.
    """
    name, directions, hidden = layer.layer, layer.directions, layer.hidden_size
    matrices = layer.num_matrices
    frac = 2.0**PREACTIVATION_FRAC_BITS
    projection = None
    if layer.projection is not None:
        product = Domain(f"{name}.input", *runtime_quantization(layer.input_quant, f"{name}.input"))
        projection = lower_linear(layer.projection, program, source, product)
        product = register_input(program, layer.input_quant, f"{name}.input")
    else:
        product = register_input(program, layer.input_quant, f"{name}.input")
        if source is not None:
            program.add_multiplier(f"{name}.rq.input", source.scale / product.scale)
    weight, weight_scale, weight_bits = integer_tensor(
        layer.weight_quant, layer.weight, f"{name}.weight"
    )
    program.add_quantized(
        f"{name}.weight", weight, weight_bits, weight_scale, role="weight", point=True
    )
    rows = weight_scale.expand(weight.shape[0]).reshape(directions, matrices, hidden)
    accumulator = rows * product.scale  # (D, M, H)
    state_scale, state_bits = runtime_quantization(layer.state_quant, f"{name}.c")
    program.add_scale(f"{name}.c", state_bits, state_scale, role="state", point=False)
    carry_scale = CARRY_HEADROOM * output_threshold / (2 ** (CARRY_BITS - 1) - 1)
    program.add_scale(f"{name}.h", CARRY_BITS, carry_scale, role="carry", point=False)
    scales = {}
    for vector in VECTORS:
        values, scale, bits = integer_tensor(
            layer.vector_quant, getattr(layer, vector), f"{name}.{vector}"
        )
        program.add_quantized(f"{name}.{vector}", values, bits, scale, role="fixed", point=False)
        scales[vector] = scale
    program.add_multiplier(
        f"{name}.rq.candidate", accumulator[:, 0] / state_scale * 2**CANDIDATE_FRAC_BITS
    )
    program.add_multiplier(f"{name}.rq.forget", accumulator[:, 1] * frac)
    program.add_multiplier(f"{name}.rq.reset", accumulator[:, 2] * frac)
    for gate in ("forget", "reset"):
        program.add_multiplier(f"{name}.rq.v_{gate}", scales[f"v_{gate}"] * state_scale * frac)
        program.add_multiplier(f"{name}.rq.b_{gate}", scales[f"b_{gate}"] * frac)
    kind = _highway_kind(layer)
    if kind == "matrix":
        highway = layer.alpha * accumulator[:, 3] / carry_scale
    elif kind == "product_input":
        highway = torch.tensor(layer.alpha * product.scale / carry_scale)
    else:
        assert source is not None, "a projected SRU layer is never the first layer"
        highway = torch.tensor(layer.alpha * source.scale / carry_scale)
    program.add_multiplier(f"{name}.rq.highway", highway)
    program.add_multiplier(f"{name}.rq.state_out", torch.tensor(state_scale / carry_scale / ONE))
    program.add_multiplier(f"{name}.rq.highway_out", torch.tensor(1.0 / ONE))
    description = {
        "kind": "sru",
        "name": name,
        "directions": directions,
        "hidden": hidden,
        "matrices": matrices,
        "highway": kind,
        "alpha": layer.alpha,
        "source": None if source is None else source.name,
        "projection": projection,
        "accumulator": matmul_description(weight_bits, product.bits, layer.product_input),
    }
    return description, program.domain(f"{name}.h")


def _by_direction(time_major: Tensor, directions: int, *, split: bool = False) -> Tensor:
    """``(T, B, ...)`` -> ``(D, T, B, ...)``, direction 1 reversed in time (as the float layer)."""
    if directions == 1:
        return time_major.unsqueeze(0)
    if split:
        halves = time_major.unflatten(-1, (directions, -1))
        return torch.stack((halves[..., 0, :], halves[..., 1, :].flip(0)))
    return torch.stack((time_major, time_major.flip(0)))


class IntegerSRU:
    """Runs a lowered SRU layer on integers."""

    def __init__(self, program: IntegerProgram, description: dict[str, Any]) -> None:
        name = self.name = description["name"]
        self.rounding = program.rounding
        self.directions, self.hidden = description["directions"], description["hidden"]
        self.matrices, self.highway = description["matrices"], description["highway"]
        self.wide = description["accumulator"]["dtype"] == "int64"
        dtype = torch.int64 if self.wide else torch.int32
        weight = program.values(f"{name}.weight")
        self.weight_t = (
            weight.view(self.directions, -1, weight.shape[1]).transpose(1, 2).contiguous().to(dtype)
        )
        self.projection = (
            IntegerLinear(program, description["projection"]) if description["projection"] else None
        )
        first = description["source"] is None
        self.input_point_quantizer = (
            None
            if self.projection is not None
            else InputPoint(program, f"{name}.input", None if first else f"{name}.rq.input")
        )
        self.state_bits = program.bits(f"{name}.c")
        vector_shape = (self.directions, 1, self.hidden)  # broadcast over the batch
        self.v = {
            g: program.values(f"{name}.v_{g}").view(vector_shape) for g in ("forget", "reset")
        }
        self.bias = {
            g: multiply_by_quantized_multiplier_wide(
                program.values(f"{name}.b_{g}"), program.multiplier(f"{name}.rq.b_{g}")
            ).view(vector_shape)
            for g in ("forget", "reset")
        }
        self.rq = {
            key: program.multiplier(f"{name}.rq.{key}")
            for key in (
                "candidate",
                "forget",
                "reset",
                "v_forget",
                "v_reset",
                "highway",
                "state_out",
                "highway_out",
            )
        }
        self.sigmoid = program.lookup_table("sigmoid")

    def _per_row(self, key: str) -> QuantizedMultiplier:
        """A (D, H) multiplier shaped to broadcast over (D, T, B, H)."""
        multiplier = self.rq[key]
        if multiplier.m0.dim() == 0:
            return multiplier
        return QuantizedMultiplier(multiplier.m0[:, None, None], multiplier.shift[:, None, None])

    def _product_input(self, x: Tensor) -> Tensor:
        if self.projection is not None:
            return self.projection(x)
        assert self.input_point_quantizer is not None
        return self.input_point_quantizer(x)

    def __call__(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, input)`` integers (features for the first layer) -> ``(B, T, D*H)`` carry integers."""
        batch, steps = x.shape[:2]
        directions, hidden = self.directions, self.hidden
        time_major = x.transpose(0, 1)
        product_input = self._product_input(time_major)
        stacked = _by_direction(product_input, directions)
        acc = torch.bmm(
            stacked.reshape(directions, steps * batch, -1).to(self.weight_t.dtype), self.weight_t
        )
        acc = acc.to(torch.int64).view(directions, steps, batch, self.matrices, hidden)
        limit = CANDIDATE_LIMIT << CANDIDATE_FRAC_BITS
        candidate = requantize(
            acc[..., 0, :], self._per_row("candidate"), wide=self.wide, rounding=self.rounding
        ).clamp(-limit, limit)
        forget_in = requantize(
            acc[..., 1, :], self._per_row("forget"), wide=self.wide, rounding=self.rounding
        )
        reset_in = requantize(
            acc[..., 2, :], self._per_row("reset"), wide=self.wide, rounding=self.rounding
        )
        if self.highway == "matrix":
            highway = requantize(
                acc[..., 3, :], self._per_row("highway"), wide=self.wide, rounding=self.rounding
            )
        elif self.highway == "product_input":
            highway = requantize(
                _by_direction(product_input, directions, split=True),
                self.rq["highway"],
                wide=False,
                rounding=self.rounding,
            )
        else:
            highway = requantize(
                _by_direction(time_major, directions, split=True),
                self.rq["highway"],
                wide=False,
                rounding=self.rounding,
            )
        highway = highway.clamp(-HIGHWAY_LIMIT, HIGHWAY_LIMIT)
        valid = step_mask(lengths, steps, torch.bool).t()  # (T, B)
        mask = _by_direction(valid, directions).unsqueeze(-1)  # (D, T, B, 1)
        c = torch.zeros(directions, batch, hidden, dtype=torch.int64)
        one = self.sigmoid.one
        outputs = []
        for t in range(steps):
            forget_pre = forget_in[:, t] + self.bias["forget"]
            forget_pre = forget_pre + multiply_by_quantized_multiplier_wide(
                self.v["forget"] * c, self.rq["v_forget"]
            )
            f = self.sigmoid(forget_pre)
            update = rounding_divide_by_pot(
                f * (c << CANDIDATE_FRAC_BITS) + (one - f) * candidate[:, t],
                self.sigmoid.output_frac_bits + CANDIDATE_FRAC_BITS,
            )
            c_new = torch.where(mask[:, t], saturate(update, self.state_bits), c)
            reset_pre = reset_in[:, t] + self.bias["reset"]
            reset_pre = reset_pre + multiply_by_quantized_multiplier_wide(
                self.v["reset"] * c, self.rq["v_reset"]
            )
            r = self.sigmoid(reset_pre)
            h = rescale_sum(
                [
                    (r * c_new, self.rq["state_out"]),
                    ((one - r) * highway[:, t], self.rq["highway_out"]),
                ]
            )
            outputs.append(saturate(h, CARRY_BITS))
            c = c_new
        h = torch.stack(outputs, dim=1)  # (D, T, B, H)
        h = torch.stack((h[0], h[1].flip(0)), dim=2) if directions == 2 else h[0].unsqueeze(2)
        out = h.transpose(0, 1).reshape(batch, steps, directions * hidden)
        return out * valid.t().unsqueeze(-1).to(torch.int64)
