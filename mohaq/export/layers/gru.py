"""Integer GRU layer (the equations of :mod:`mohaq.models.gru`), both granularities.

Layer granularity (MOHAQ): the products stay in their accumulators; gate
pre-activations are requantized to 24 fraction bits and go through the
sigmoid/tanh tables (gates with 24 fraction bits, see :mod:`mohaq.export.lut`);
``r * (W_hn h + b_hn)`` multiplies the gate by the product part in the
pre-activation format; the new hidden state
``(1 - z) n + z h_in`` is summed at the 28-fraction-bit carry with one rounding;
``h_in`` is the carry requantized to the 16-bit hidden-state point.

Operator granularity (Miccini et al.): every operand and result named in
:mod:`mohaq.models.gru` is an integer at its own point's bits and scale:
``ih`` and ``hh`` are requantized from the accumulators; the gate tables'
outputs are requantized to ``r``, ``z``, ``n``; ``rhn``, ``zh`` and
``zn = n - z n`` are integer products requantized (one rounding each) to their
points; ``zn + zh`` is summed at the 28-fraction-bit carry, then requantized to ``h``.
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
from mohaq.models.gru import GRULayer
from mohaq.models.quant_linear import QuantLinear

ONE = 2**OUTPUT_FRAC_BITS
# |pre-activation| bound (256) of W_hn h + b_hn before it is multiplied by r.
PREACTIVATION_LIMIT = 2 ** (PREACTIVATION_FRAC_BITS + 8)


def lower_gru(
    layer: GRULayer, program: IntegerProgram, source: Domain | None, projection: QuantLinear | None
) -> tuple[dict[str, Any], Domain]:
    """Registers a GRU layer; returns its description and the output (28-fraction-bit carry) domain."""
    name = layer.layer
    description, scales = lower_stepwise(layer, program, source, projection, "gru")
    frac, carry = 2.0**PREACTIVATION_FRAC_BITS, 2.0**CARRY_FRAC_BITS
    program.add_scale(f"{name}.h_carry", CARRY_BITS, 1.0 / carry, role="carry", point=False)
    add = program.add_multiplier
    add(f"{name}.rq.h_in", 1.0 / carry / scales.hidden)
    if not scales.operator:
        add(f"{name}.rq.ih_pre", scales.ih * frac)
        add(f"{name}.rq.hh_pre", scales.hh * frac)
        add(f"{name}.rq.rhn", 1.0 / ONE)
        add(f"{name}.rq.zn_carry", carry / ONE / ONE)
        add(f"{name}.rq.zh_carry", scales.hidden * carry / ONE)
        return description, program.domain(f"{name}.h_carry")
    s = register_operators(layer, program)
    add(f"{name}.rq.ih", scales.ih / s["ih"])
    add(f"{name}.rq.hh", scales.hh / s["hh"])
    add(f"{name}.rq.ih_pre", s["ih"] * frac)
    add(f"{name}.rq.hh_pre", s["hh"] * frac)
    for op in ("r", "z", "n"):
        add(f"{name}.rq.{op}", 1.0 / ONE / s[op])
    add(f"{name}.rq.rhn", s["r"] * s["hh"] / s["rhn"])
    add(f"{name}.rq.rhn_pre", s["rhn"] * frac)
    add(f"{name}.rq.zn_n", s["n"] / s["zn"])
    add(f"{name}.rq.zn_zn", s["z"] * s["n"] / s["zn"])
    add(f"{name}.rq.zh", s["z"] * scales.hidden / s["zh"])
    add(f"{name}.rq.zn_carry", s["zn"] * carry)
    add(f"{name}.rq.zh_carry", s["zh"] * carry)
    return description, program.domain(f"{name}.h_carry")


class IntegerGRU(IntegerStepwise):
    """Runs a lowered GRU layer on integers."""

    def __init__(self, program: IntegerProgram, description: dict[str, Any]) -> None:
        super().__init__(program, description)
        keys = ["h_in", "ih_pre", "hh_pre", "rhn", "zn_carry", "zh_carry"]
        if self.operator:
            keys += ["ih", "hh", "r", "z", "n", "rhn_pre", "zn_n", "zn_zn", "zh"]
        self.rq = {key: self.multiplier(key) for key in keys}
        self.op_bits = (
            {op: self.bits(op) for op in ("ih", "hh", "r", "z", "n", "rhn", "zh", "zn")}
            if self.operator
            else {}
        )

    def prepare(self, ih_all: Tensor) -> Tensor:
        if not self.operator:
            return ih_all
        return saturate(
            requantize(ih_all, self.rq["ih"], wide=self.wide_ih, rounding=self.rounding),
            self.op_bits["ih"],
        )

    def _pre(self, ih: Tensor, hh: Tensor, index: int) -> Tensor:
        """Gate ``index``'s pre-activation (table input format) from the ih and hh parts."""
        hidden = self.hidden
        window = slice(index * hidden, (index + 1) * hidden)
        wide_ih, wide_hh = (True, True) if self.operator else (self.wide_ih, self.wide_hh)
        return requantize(
            ih[..., window],
            gate(self.rq["ih_pre"], index, hidden),
            wide=wide_ih,
            rounding=self.rounding,
        ) + requantize(
            hh[..., window],
            gate(self.rq["hh_pre"], index, hidden),
            wide=wide_hh,
            rounding=self.rounding,
        )

    def step(self, ih: Tensor, states: list[Tensor]) -> list[Tensor]:
        (h,) = states
        hidden = self.hidden
        h_in = saturate(
            requantize(h, self.rq["h_in"], wide=False, rounding=self.rounding), self.hidden_bits
        )
        hh = self.recurrent_product(h_in)
        if not self.operator:
            r = self.sigmoid(self._pre(ih, hh, 0))
            z = self.sigmoid(self._pre(ih, hh, 1))
            # r * (W_hn h + b_hn): the product part in the pre-activation format first,
            # clamped where tanh is long saturated, so the product fits int64.
            hh_n = requantize(
                hh[..., 2 * hidden :], gate(self.rq["hh_pre"], 2, hidden), wide=self.wide_hh,
                rounding=self.rounding,
            ).clamp(-PREACTIVATION_LIMIT, PREACTIVATION_LIMIT)  # fmt: skip
            rhn = rq(r * hh_n, self.rq["rhn"])
            n_pre = requantize(
                ih[..., 2 * hidden :], gate(self.rq["ih_pre"], 2, hidden), wide=self.wide_ih,
                rounding=self.rounding,
            )  # fmt: skip
            n = self.tanh(n_pre + rhn)
            h_new = rescale_sum(
                [((self.sigmoid.one - z) * n, self.rq["zn_carry"]), (z * h_in, self.rq["zh_carry"])]
            )
            return [saturate(h_new, CARRY_BITS)]
        b = self.op_bits
        hh = saturate(
            requantize(hh, self.rq["hh"], wide=self.wide_hh, rounding=self.rounding), b["hh"]
        )
        r = saturate(rq(self.sigmoid(self._pre(ih, hh, 0)), self.rq["r"]), b["r"])
        z = saturate(rq(self.sigmoid(self._pre(ih, hh, 1)), self.rq["z"]), b["z"])
        rhn = saturate(rq(r * hh[..., 2 * hidden :], self.rq["rhn"]), b["rhn"])
        n_pre = rq(ih[..., 2 * hidden :], self.rq["ih_pre"]) + rq(rhn, self.rq["rhn_pre"])
        n = saturate(rq(self.tanh(n_pre), self.rq["n"]), b["n"])
        zn = saturate(rescale_sum([(n, self.rq["zn_n"]), (-(z * n), self.rq["zn_zn"])]), b["zn"])
        zh = saturate(rq(z * h_in, self.rq["zh"]), b["zh"])
        h_new = rescale_sum([(zn, self.rq["zn_carry"]), (zh, self.rq["zh_carry"])])
        return [saturate(h_new, CARRY_BITS)]
