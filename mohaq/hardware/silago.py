"""SiLago (KTH DRRA) with the constants of the MOHAQ paper and code.

The DPU datapath is 16 bits wide and runs one 16-bit, two 8-bit or four 4-bit
multiplications per cycle; a layer's weights and input activation share one
precision. Per frame:

- a layer at ``b`` bits runs ``speedup_per_bits[b]`` times faster than at 16
  bits (16 -> 1, 8 -> 2, 4 -> 4), so it takes ``MACs / speedup`` time units.
  ``speedup`` is the physical time ratio, ``sum(MACs) / sum(MACs / speedup)``
  (the time of the all-16-bit model over this one's); ``speedup_mohaq`` is the
  MAC-weighted mean of the layer speedups, as the MOHAQ code computes it
  (higher whenever layers differ);
- energy (pJ) = stored bits x SRAM energy per bit + sum of MACs x energy per
  MAC at the layer's precision. Every stored bit is read once per frame: the
  quantized weights (params x bits over all weight points) and the
  fixed-precision values (biases, element-wise recurrent vectors:
  ``workload.fixed_params`` at ``workload.fixed_bits``, 16 bits in MOHAQ);
- memory = the same stored bits / 8 bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mohaq.hardware.base import (
    CostModel,
    CostReport,
    mac_weighted_mean,
    memory_totals,
    product_row,
    products,
    time_ratio_speedup,
    weight_memory_bits,
)
from mohaq.hardware.constants import (
    GRID_CONSTANTS,
    Constant,
    check_constants,
    common_constants,
    require_table_covers,
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
        speedup_per_bits: layer speedup over 16 bits at each precision (> 0).
        energy_per_mac_pj: energy of one MAC at each precision (pJ, > 0).
        sram_pj_per_bit: SRAM read energy per stored bit (pJ, >= 0).
        allowed_bits: the precisions the DPU runs (default: the keys of
            ``speedup_per_bits``, i.e. 4/8/16; MOHAQ marks 2 bits infeasible).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory (None: unbounded).
        per_channel_weights, asymmetric_activations: the grids the platform
            supports (see :class:`~mohaq.hardware.base.CostModel`; default False).
        baseline_bits: the precision of speedup 1 and of the baseline energy.

    Raises:
        ConstantError: a constant of the wrong type or sign, or a table
            without an entry for an allowed bit width.
    """

    metric_names = (
        "speedup",
        "speedup_mohaq",
        "energy",
        "energy_saving",
        "memory_mb",
        "memory_bytes",
    )
    higher_is_better = {"speedup": True, "speedup_mohaq": True, "energy_saving": True}
    units = {"energy": "pJ/frame", "memory_mb": "MiB", "memory_bytes": "B"}
    metric_descriptions = {
        "speedup": "physical: total time at the baseline precision / total time",
        "speedup_mohaq": "MOHAQ's MAC-weighted mean of the per-layer speedups",
        "energy": "stored bits x SRAM energy per bit + MACs x energy per MAC",
        "energy_saving": "energy at the baseline precision / energy",
    }
    constants = {
        "speedup_per_bits": Constant(
            "bits_table", "layer speedup over 16 bits at each precision", minimum=0, strict=True
        ),
        "energy_per_mac_pj": Constant(
            "bits_table", "energy of one MAC at each precision, pJ", minimum=0, strict=True
        ),
        "sram_pj_per_bit": Constant("number", "SRAM read energy per stored bit, pJ", minimum=0),
        "allowed_bits": Constant(
            "optional_bits",
            "the precisions the DPU runs; null or absent: the keys of speedup_per_bits",
            optional=True,
        ),
        **common_constants(
            "shared_layer_precision", "memory_capacity_bytes", "baseline_bits", *GRID_CONSTANTS
        ),
    }

    def __init__(
        self,
        *,
        speedup_per_bits: Mapping[int, float] = SILAGO_SPEEDUP,
        energy_per_mac_pj: Mapping[int, float] = SILAGO_ENERGY_PER_MAC_PJ,
        sram_pj_per_bit: float = SILAGO_SRAM_PJ_PER_BIT,
        allowed_bits: Sequence[int] | None = None,
        shared_layer_precision: bool = True,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 16,
        per_channel_weights: bool = False,
        asymmetric_activations: bool = False,
    ) -> None:
        c = check_constants(self.constants, locals())
        self.speedup_per_bits: dict[int, float] = c["speedup_per_bits"]
        self.energy_per_mac_pj: dict[int, float] = c["energy_per_mac_pj"]
        self.sram_pj_per_bit: float = c["sram_pj_per_bit"]
        allowed = c["allowed_bits"] or tuple(sorted(self.speedup_per_bits))
        require_table_covers(
            "speedup_per_bits", self.speedup_per_bits, allowed, "the layer speedup at each"
        )
        require_table_covers(
            "energy_per_mac_pj", self.energy_per_mac_pj, allowed, "the MAC energy at each"
        )
        super().__init__(
            allowed_bits=allowed,
            shared_layer_precision=c["shared_layer_precision"],
            memory_capacity_bytes=c["memory_capacity_bytes"],
            baseline_bits=c["baseline_bits"],
            per_channel_weights=c["per_channel_weights"],
            asymmetric_activations=c["asymmetric_activations"],
        )

    def _layer_bits(self, weight_bits: int, activation_bits: int) -> int:
        # With shared precision both are equal; with it switched off (an
        # override), the datapath runs in the mode of the wider operand.
        return max(weight_bits, activation_bits)

    def stored_bits(self, workload: Workload, assignment: BitAssignment) -> int:
        """Bits read from SRAM per frame: every weight and fixed-precision value."""
        return weight_memory_bits(workload, assignment)

    def _energy(self, workload: Workload, assignment: BitAssignment) -> tuple[float, list[Any]]:
        mac_pj = [
            p.macs * self.energy_per_mac_pj[self._layer_bits(p.weight_bits, p.activation_bits)]
            for p in products(workload, assignment)
        ]
        return self.stored_bits(workload, assignment) * self.sram_pj_per_bit + sum(mac_pj), mac_pj

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
                    "time_share": product.macs / speed,
                    "mac_energy_pj": compute_pj,
                    "sram_energy_pj": sram_pj,
                    "memory_bytes": product.point.params * product.weight_bits / 8,
                }
            )
        total_time = sum(row["time_share"] for row in rows)
        for row in rows:
            row["time_share"] /= total_time
        fixed_pj = workload.fixed_params * workload.fixed_bits * self.sram_pj_per_bit
        totals = {
            "speedup": time_ratio_speedup(speeds),
            "speedup_mohaq": mac_weighted_mean(speeds),
            "energy": energy,
            "energy_saving": baseline_energy / energy,
            **memory_totals(workload, assignment),
        }
        notes = [
            f"speedup, speedup_mohaq and energy_saving relative to all points at "
            f"{self.baseline_bits} bits",
            f"energy = stored bits x {self.sram_pj_per_bit:g} pJ + sum of MACs x energy per MAC; "
            f"stored bits include {workload.fixed_params:,} fixed values at "
            f"{workload.fixed_bits} bits ({fixed_pj:,.1f} pJ)",
        ]
        return self._report(totals, rows, notes)
