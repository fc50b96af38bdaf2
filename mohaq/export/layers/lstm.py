"""Integer LSTM layer (the equations of :mod:`mohaq.models.lstm`), both granularities.

Layer granularity: gate pre-activations (24 fraction bits) from the two
accumulators, sigmoid/tanh tables (24 fraction bits), the cell state ``f c + i g`` summed
at the 16-bit cell-state point's scale with one rounding, ``tanh(c)`` from the
table, and ``h = o tanh(c)`` at the 28-fraction-bit carry (requantized to the 16-bit
hidden-state point when fed back).

Operator granularity: ``ih``, ``hh``, the gates ``i f g o``, the products
``fc``, ``ig``, the cell state ``c``, ``tanh_c`` and ``oc`` are integers at their
points' bits and scales; ``oc`` is the hidden state carried to the next step
and layer.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mohaq.export.fixed_point import requantize, rescale_sum, saturate
from mohaq.export.layers.stepwise import (
    CARRY_BITS,
    CARRY_FRAC_BITS,
    IntegerStepwise,
    gate,
    lower_stepwise,
    register_operators,
    rq,
)
from mohaq.export.lut import OUTPUT_FRAC_BITS, PREACTIVATION_FRAC_BITS
from mohaq.export.program import Domain, IntegerProgram
from mohaq.export.reading import runtime_quantization
from mohaq.models.lstm import LSTMLayer
from mohaq.models.quant_linear import QuantLinear

ONE = 2**OUTPUT_FRAC_BITS
GATES = ("i", "f", "g", "o")


def lower_lstm(
    layer: LSTMLayer, program: IntegerProgram, source: Domain | None, projection: QuantLinear | None
) -> tuple[dict[str, Any], Domain]:
    """Registers an LSTM layer; returns its description and output domain."""
    name = layer.layer
    description, scales = lower_stepwise(layer, program, source, projection, "lstm")
    frac, carry = 2.0**PREACTIVATION_FRAC_BITS, 2.0**CARRY_FRAC_BITS
    cell_scale, cell_bits = runtime_quantization(layer.cell_quant, f"{name}.c")
    program.add_scale(f"{name}.c", cell_bits, cell_scale, role="state", point=scales.operator)
    add = program.add_multiplier
    add(f"{name}.rq.c_pre", cell_scale * frac)
    if not scales.operator:
        program.add_scale(f"{name}.h_carry", CARRY_BITS, 1.0 / carry, role="carry", point=False)
        add(f"{name}.rq.h_in", 1.0 / carry / scales.hidden)
        add(f"{name}.rq.ih_pre", scales.ih * frac)
        add(f"{name}.rq.hh_pre", scales.hh * frac)
        add(f"{name}.rq.fc", 1.0 / ONE)
        add(f"{name}.rq.ig", 1.0 / ONE / ONE / cell_scale)
        add(f"{name}.rq.h_carry", carry / ONE / ONE)
        return description, program.domain(f"{name}.h_carry")
    s = register_operators(layer, program)
    add(f"{name}.rq.h_in", s["oc"] / scales.hidden)
    add(f"{name}.rq.ih", scales.ih / s["ih"])
    add(f"{name}.rq.hh", scales.hh / s["hh"])
    add(f"{name}.rq.ih_pre", s["ih"] * frac)
    add(f"{name}.rq.hh_pre", s["hh"] * frac)
    for op in GATES:
        add(f"{name}.rq.{op}", 1.0 / ONE / s[op])
    add(f"{name}.rq.fc", s["f"] * cell_scale / s["fc"])
    add(f"{name}.rq.ig", s["i"] * s["g"] / s["ig"])
    add(f"{name}.rq.fc_c", s["fc"] / cell_scale)
    add(f"{name}.rq.ig_c", s["ig"] / cell_scale)
    add(f"{name}.rq.tanh_c", 1.0 / ONE / s["tanh_c"])
    add(f"{name}.rq.oc", s["o"] * s["tanh_c"] / s["oc"])
    return description, program.domain(f"{name}.oc")


class IntegerLSTM(IntegerStepwise):
    """Runs a lowered LSTM layer on integers."""

    states = 2

    def __init__(self, program: IntegerProgram, description: dict[str, Any]) -> None:
        super().__init__(program, description)
        keys = ["h_in", "ih_pre", "hh_pre", "c_pre", "fc", "ig"]
        if self.operator:
            keys += ["ih", "hh", *GATES, "fc_c", "ig_c", "tanh_c", "oc"]
        else:
            keys += ["h_carry"]
        self.rq = {key: self.multiplier(key) for key in keys}
        self.cell_bits = self.bits("c")
        ops = ("ih", "hh", *GATES, "fc", "ig", "tanh_c", "oc")
        self.op_bits = {op: self.bits(op) for op in ops} if self.operator else {}

    def prepare(self, ih_all: Tensor) -> Tensor:
        if not self.operator:
            return ih_all
        return saturate(
            requantize(ih_all, self.rq["ih"], wide=self.wide_ih, rounding=self.rounding),
            self.op_bits["ih"],
        )

    def _gates(self, ih: Tensor, hh: Tensor) -> list[Tensor]:
        """The four gates in the tables' output format."""
        hidden, out = self.hidden, []
        wide_ih, wide_hh = (True, True) if self.operator else (self.wide_ih, self.wide_hh)
        for index, op in enumerate(GATES):
            window = slice(index * hidden, (index + 1) * hidden)
            pre = requantize(
                ih[..., window],
                gate(self.rq["ih_pre"], index, hidden),
                wide=wide_ih,
                rounding=self.rounding,
            )
            pre = pre + requantize(
                hh[..., window],
                gate(self.rq["hh_pre"], index, hidden),
                wide=wide_hh,
                rounding=self.rounding,
            )
            out.append(self.tanh(pre) if op == "g" else self.sigmoid(pre))
        return out

    def step(self, ih: Tensor, states: list[Tensor]) -> list[Tensor]:
        h, c = states
        h_in = saturate(
            requantize(h, self.rq["h_in"], wide=False, rounding=self.rounding), self.hidden_bits
        )
        hh = self.recurrent_product(h_in)
        if not self.operator:
            i, f, g, o = self._gates(ih, hh)
            c_new = saturate(
                rescale_sum([(f * c, self.rq["fc"]), (i * g, self.rq["ig"])]), self.cell_bits
            )
            tanh_c = self.tanh(rq(c_new, self.rq["c_pre"]))
            h_new = saturate(rq(o * tanh_c, self.rq["h_carry"]), CARRY_BITS)
            return [h_new, c_new]
        b = self.op_bits
        hh = saturate(
            requantize(hh, self.rq["hh"], wide=self.wide_hh, rounding=self.rounding), b["hh"]
        )
        i, f, g, o = (
            saturate(rq(value, self.rq[op]), b[op])
            for op, value in zip(GATES, self._gates(ih, hh), strict=True)
        )
        fc = saturate(rq(f * c, self.rq["fc"]), b["fc"])
        ig = saturate(rq(i * g, self.rq["ig"]), b["ig"])
        c_new = saturate(
            rescale_sum([(fc, self.rq["fc_c"]), (ig, self.rq["ig_c"])]), self.cell_bits
        )
        tanh_c = saturate(
            rq(self.tanh(rq(c_new, self.rq["c_pre"])), self.rq["tanh_c"]), b["tanh_c"]
        )
        oc = saturate(rq(o * tanh_c, self.rq["oc"]), b["oc"])
        return [oc, c_new]
