"""SiLago (KTH DRRA) with the constants of the MOHAQ code.

The DPU datapath is 16 bits wide and runs one 16-bit, two 8-bit or four 4-bit
multiplications per cycle; a layer's weights and input activation share one
precision. MOHAQ's model, per frame:

- speedup of a layer over 16 bits = its precision's speedup (16 -> 1, 8 -> 2,
  4 -> 4); the model's speedup is the MAC-weighted mean over layers;
- energy (pJ) = weight bits x SRAM energy per bit + sum of MACs x energy per
  MAC at the layer's precision; weight bits = sum of params x bits over all
  weight points (the MOHAQ code counts every weight bit read once per frame);
- memory = (weight bits + fixed params x 16) / 8 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mohaq.hardware.base import (
    CostModel,
    CostModelError,
    CostReport,
    mac_weighted_mean,
    memory_totals,
    product_row,
    products,
)
from mohaq.hardware.registry import register_cost_model
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload

SILAGO_SPEEDUP: dict[int, float] = {16: 1.0, 8: 2.0, 4: 4.0}
SILAGO_ENERGY_PER_MAC_PJ: dict[int, float] = {16: 1.666, 8: 1.084 / 2, 4: 0.613 / 4}
SILAGO_SRAM_PJ_PER_BIT = 0.08


@register_cost_model("silago")
class SiLagoCostModel(CostModel):
    """SiLago/DRRA: MOHAQ's speedup, energy and memory model.

    Args:
        speedup_per_bits: layer speedup over 16 bits at each precision.
        energy_per_mac_pj: energy of one MAC at each precision (pJ).
        sram_pj_per_bit: SRAM read energy per weight bit (pJ).
        allowed_bits: the precisions the DPU runs (default: the keys of
            ``speedup_per_bits``, i.e. 4/8/16; MOHAQ marks 2 bits infeasible).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory (None: unbounded).
        baseline_bits: the precision of speedup 1 and of the baseline energy.
    """

    metric_names = ("speedup", "energy", "energy_saving", "memory_mb", "memory_bytes")
    higher_is_better = {"speedup": True, "energy_saving": True}
    units = {"energy": "pJ/frame", "memory_mb": "MiB", "memory_bytes": "B"}

    def __init__(
        self,
        *,
        speedup_per_bits: Mapping[int, float] | None = None,
        energy_per_mac_pj: Mapping[int, float] | None = None,
        sram_pj_per_bit: float = SILAGO_SRAM_PJ_PER_BIT,
        allowed_bits: Sequence[int] | None = None,
        shared_layer_precision: bool = True,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 16,
    ) -> None:
        self.speedup_per_bits = {
            int(k): float(v) for k, v in (speedup_per_bits or SILAGO_SPEEDUP).items()
        }
        self.energy_per_mac_pj = {
            int(k): float(v) for k, v in (energy_per_mac_pj or SILAGO_ENERGY_PER_MAC_PJ).items()
        }
        self.sram_pj_per_bit = float(sram_pj_per_bit)
        allowed = tuple(allowed_bits) if allowed_bits is not None else tuple(self.speedup_per_bits)
        missing = sorted(
            b for b in allowed if b not in self.speedup_per_bits or b not in self.energy_per_mac_pj
        )
        if missing:
            raise CostModelError(
                f"silago: allowed bits {missing} have no speedup_per_bits/energy_per_mac_pj entry"
            )
        super().__init__(
            allowed_bits=allowed,
            shared_layer_precision=shared_layer_precision,
            memory_capacity_bytes=memory_capacity_bytes,
            baseline_bits=baseline_bits,
        )

    def _layer_bits(self, weight_bits: int, activation_bits: int) -> int:
        # With shared precision both are equal; with it switched off (an
        # override), the datapath runs in the mode of the wider operand.
        return max(weight_bits, activation_bits)

    def _energy(self, workload: Workload, assignment: BitAssignment) -> tuple[float, list[Any]]:
        found = products(workload, assignment)
        weight_bits = sum(
            p.params * assignment.get(p.name) for p in workload.points if p.kind == "weight"
        )
        mac_pj = [
            p.macs * self.energy_per_mac_pj[self._layer_bits(p.weight_bits, p.activation_bits)]
            for p in found
        ]
        return weight_bits * self.sram_pj_per_bit + sum(mac_pj), mac_pj

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        self.require_runnable(workload, assignment)
        found = products(workload, assignment)
        energy, mac_pj = self._energy(workload, assignment)
        baseline_energy, _ = self._energy(workload, self.baseline_assignment(workload))
        base_speed = self.speedup_per_bits[self.baseline_bits]
        rows = []
        speeds = []
        for product, compute_pj in zip(found, mac_pj, strict=True):
            bits = self._layer_bits(product.weight_bits, product.activation_bits)
            speed = self.speedup_per_bits[bits] / base_speed
            speeds.append((product.macs, speed))
            sram_pj = product.point.params * product.weight_bits * self.sram_pj_per_bit
            rows.append(
                {
                    **product_row(product),
                    "speedup": speed,
                    "mac_energy_pj": compute_pj,
                    "sram_energy_pj": sram_pj,
                    "memory_bytes": product.point.params * product.weight_bits / 8,
                }
            )
        totals = {
            "speedup": mac_weighted_mean(speeds),
            "energy": energy,
            "energy_saving": baseline_energy / energy,
            **memory_totals(workload, assignment),
        }
        notes = [
            f"speedup and energy_saving relative to all points at {self.baseline_bits} bits",
            f"energy = weight bits x {self.sram_pj_per_bit} pJ + sum of MACs x energy per MAC",
        ]
        return self._report(totals, rows, notes)
