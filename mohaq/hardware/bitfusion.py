"""Bit Fusion (Sharma et al., ISCA 2018): MOHAQ's table and an analytic model.

``bitfusion-mohaq`` is the MOHAQ code's model: a layer's speedup over 16x16
bits depends only on weight bits x activation bits (256 -> 1, 128 -> 2,
64 -> 4, 32 -> 8, 16 -> 16, 8 -> 32, <= 4 -> 64), MAC-weighted over layers. It
prices compute alone, as if weights were always on chip.

``bitfusion`` models the accelerator: a 16 x 32 array of fusion units (2-bit
BitBricks) at 500 MHz with weight/input/output buffers and a 192-bit/cycle DRAM
interface. Per matrix product of B frames (B = ``batch``: frames that share one
fetch of the weights; 1 for a recurrent layer, whose next input depends on its
output):

- compute cycles = B x ceil(OC / 32) x ceil(IC / (16 x pf)) x passes, with
  pf = floor(8 / max(a, 2)) x floor(8 / max(w, 2)) for operands up to 8 bits.
  A 16-bit operand is run as two 8-bit halves (temporal decomposition, as the
  paper's fused 16-bit mode costs): passes = 2 per 16-bit operand, so 16x16
  takes 4 passes of 8x8 (pf 1/4) and 16x8 two. Bits 9 to 15 cost as 16.
- DRAM bits: weights IC x OC x w once per batch; inputs B x IC x a (again for
  every output tile when they do not fit in half the input buffer); outputs
  B x OC x 32; partial sums 2 x 32 bits per output and extra input-dimension
  tile when one output column's weights do not fit in half the weight buffer.
- latency = max(compute, DRAM - first load - last store) + first load + last
  store: transfers other than the first tile in and the last tile out overlap
  compute (double buffering), so a product is bound by the slower of the two.
- energy = compute (non-stalled) cycles x array energy per cycle + SRAM bits x
  per-bit energies + DRAM bits x 15 pJ. SRAM traffic: every DRAM bit is written
  to (or read from) its buffer; each MAC reads its weight; inputs are read once
  per 32-column output group; each compute cycle updates 32 partial sums of 32
  bits (a read and a write).

At batch 1 a recurrent layer is bound by weight traffic: its latency and
energy follow the weight bits, not the pf of the fused multipliers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mohaq.hardware.base import (
    CostModel,
    CostModelError,
    CostReport,
    Product,
    mac_weighted_mean,
    memory_totals,
    product_row,
    products,
)
from mohaq.hardware.registry import register_cost_model
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload

# MOHAQ code: speedup over 16x16 by the product of weight and activation bits.
MOHAQ_BITFUSION_SPEEDUP: dict[int, float] = {
    256: 1.0,
    128: 2.0,
    64: 4.0,
    32: 8.0,
    16: 16.0,
    8: 32.0,
    4: 64.0,
}


@register_cost_model("bitfusion-mohaq")
class BitFusionMohaqCostModel(CostModel):
    """Bit Fusion as in the MOHAQ code: speedup from a weight x activation bits table.

    Args:
        speedup_per_bit_product: w x a bits -> speedup over 16x16; a product
            below the smallest key takes the smallest key's speedup.
        allowed_bits: precisions of each operand (2/4/8/16).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory (None: unbounded).
        baseline_bits: uniform precision of speedup 1.
        per_channel_weights, asymmetric_activations: grids the platform runs
            (see :class:`~mohaq.hardware.base.CostModel`); the table prices
            compute only, so neither changes the speedup.
    """

    metric_names = ("speedup", "memory_mb", "memory_bytes")
    higher_is_better = {"speedup": True}
    units = {"memory_mb": "MiB", "memory_bytes": "B"}

    def __init__(
        self,
        *,
        speedup_per_bit_product: Mapping[int, float] | None = None,
        allowed_bits: Sequence[int] | None = (2, 4, 8, 16),
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 16,
        per_channel_weights: bool = False,
        asymmetric_activations: bool = False,
    ) -> None:
        table = speedup_per_bit_product or MOHAQ_BITFUSION_SPEEDUP
        self.speedup_per_bit_product = {int(k): float(v) for k, v in table.items()}
        super().__init__(
            allowed_bits=allowed_bits,
            shared_layer_precision=shared_layer_precision,
            memory_capacity_bytes=memory_capacity_bytes,
            baseline_bits=baseline_bits,
            per_channel_weights=per_channel_weights,
            asymmetric_activations=asymmetric_activations,
        )
        # Every product the allowed bits can form must be in the table (or below it).
        for w in self.allowed_bits or ():
            for a in self.allowed_bits or ():
                self._speedup(w * a)

    def _speedup(self, bit_product: int) -> float:
        if bit_product in self.speedup_per_bit_product:
            return self.speedup_per_bit_product[bit_product]
        smallest = min(self.speedup_per_bit_product)
        if bit_product < smallest:
            return self.speedup_per_bit_product[smallest]
        raise CostModelError(
            f"{self.name}: no speedup for weight x activation bits = {bit_product}; "
            f"table keys: {sorted(self.speedup_per_bit_product)}"
        )

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        self.require_runnable(workload, assignment)
        base = self._speedup(self.baseline_bits * self.baseline_bits)
        rows, speeds = [], []
        for product in products(workload, assignment):
            speed = self._speedup(product.weight_bits * product.activation_bits) / base
            speeds.append((product.macs, speed))
            rows.append(
                {
                    **product_row(product),
                    "w_x_a": product.weight_bits * product.activation_bits,
                    "speedup": speed,
                    "memory_bytes": product.point.params * product.weight_bits / 8,
                }
            )
        totals = {"speedup": mac_weighted_mean(speeds), **memory_totals(workload, assignment)}
        notes = [
            f"speedup over all points at {self.baseline_bits}x{self.baseline_bits} bits, "
            "compute only (MOHAQ's table; weights assumed on chip)"
        ]
        return self._report(totals, rows, notes)


@dataclass(frozen=True)
class BitFusionLayerCost:
    """Cycles and traffic of one product for one batch of frames."""

    compute_cycles: int
    dram_bits: int
    dram_cycles: int
    first_load_cycles: int
    last_store_cycles: int
    latency_cycles: int
    sram_pj: float
    compute_pj: float
    dram_pj: float
    weight_dram_bits: int

    @property
    def energy_pj(self) -> float:
        return self.compute_pj + self.sram_pj + self.dram_pj


def _operand(bits: int) -> tuple[int, int]:
    """(bits one fused pass runs at, number of passes) for a ``bits``-wide operand."""
    if bits <= 2:
        return 2, 1
    if bits <= 4:
        return 4, 1
    if bits <= 8:
        return 8, 1
    if bits <= 16:
        return 8, 2
    raise CostModelError(f"bitfusion: {bits}-bit operands are not supported (at most 16)")


@register_cost_model("bitfusion")
class BitFusionCostModel(CostModel):
    """Analytic Bit Fusion: cycles, DRAM traffic, latency and energy per frame.

    Args:
        rows: fusion-unit rows (input dimension), 16.
        columns: fusion-unit columns (output dimension), 32.
        frequency_hz: clock, 500 MHz.
        weight_buffer_bytes: 64 KiB (half used while the other half fills).
        input_buffer_bytes: 32 KiB.
        output_buffer_bytes: 16 KiB.
        dram_bits_per_cycle: 192.
        batch: frames per weight fetch (1: a recurrent layer at batch 1).
        accumulator_bits: width of outputs and partial sums in DRAM, 32.
        array_pj_per_cycle: energy of one cycle of the whole array, 235.104 pJ.
        dram_pj_per_bit: 15 pJ.
        weight_read_pj_per_bit, weight_write_pj_per_bit,
        input_read_pj_per_bit, input_write_pj_per_bit,
        output_read_pj_per_bit, output_write_pj_per_bit: SRAM energies (45 nm).
        allowed_bits: operand precisions (2/4/8 native, 16 as two 8-bit passes).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory in DRAM (None: unbounded).
        baseline_bits: uniform precision that ``speedup`` and
            ``energy_saving`` compare with (16: 16x16, like MOHAQ's table).
    """

    metric_names = (
        "speedup",
        "latency_cycles",
        "latency_s",
        "energy",
        "energy_saving",
        "memory_mb",
        "memory_bytes",
    )
    higher_is_better = {"speedup": True, "energy_saving": True}
    units = {
        "latency_cycles": "cycles/frame",
        "latency_s": "s/frame",
        "energy": "pJ/frame",
        "memory_mb": "MiB",
        "memory_bytes": "B",
    }

    def __init__(
        self,
        *,
        rows: int = 16,
        columns: int = 32,
        frequency_hz: float = 500e6,
        weight_buffer_bytes: int = 64 * 1024,
        input_buffer_bytes: int = 32 * 1024,
        output_buffer_bytes: int = 16 * 1024,
        dram_bits_per_cycle: int = 192,
        batch: int = 1,
        accumulator_bits: int = 32,
        array_pj_per_cycle: float = 235.104,
        dram_pj_per_bit: float = 15.0,
        weight_read_pj_per_bit: float = 0.021,
        weight_write_pj_per_bit: float = 0.029,
        input_read_pj_per_bit: float = 0.059,
        input_write_pj_per_bit: float = 0.114,
        output_read_pj_per_bit: float = 0.033,
        output_write_pj_per_bit: float = 0.073,
        allowed_bits: Sequence[int] | None = (2, 4, 8, 16),
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 16,
    ) -> None:
        for key, value in (
            ("rows", rows),
            ("columns", columns),
            ("frequency_hz", frequency_hz),
            ("weight_buffer_bytes", weight_buffer_bytes),
            ("input_buffer_bytes", input_buffer_bytes),
            ("output_buffer_bytes", output_buffer_bytes),
            ("dram_bits_per_cycle", dram_bits_per_cycle),
            ("batch", batch),
            ("accumulator_bits", accumulator_bits),
        ):
            if value <= 0:
                raise CostModelError(f"bitfusion: {key} must be positive, got {value!r}")
        self.rows = int(rows)
        self.columns = int(columns)
        self.frequency_hz = float(frequency_hz)
        self.weight_buffer_bytes = int(weight_buffer_bytes)
        self.input_buffer_bytes = int(input_buffer_bytes)
        self.output_buffer_bytes = int(output_buffer_bytes)
        self.dram_bits_per_cycle = int(dram_bits_per_cycle)
        self.batch = int(batch)
        self.accumulator_bits = int(accumulator_bits)
        self.array_pj_per_cycle = float(array_pj_per_cycle)
        self.dram_pj_per_bit = float(dram_pj_per_bit)
        self.weight_read_pj_per_bit = float(weight_read_pj_per_bit)
        self.weight_write_pj_per_bit = float(weight_write_pj_per_bit)
        self.input_read_pj_per_bit = float(input_read_pj_per_bit)
        self.input_write_pj_per_bit = float(input_write_pj_per_bit)
        self.output_read_pj_per_bit = float(output_read_pj_per_bit)
        self.output_write_pj_per_bit = float(output_write_pj_per_bit)
        super().__init__(
            allowed_bits=allowed_bits,
            shared_layer_precision=shared_layer_precision,
            memory_capacity_bytes=memory_capacity_bytes,
            baseline_bits=baseline_bits,
        )
        for bits in self.allowed_bits or ():
            _operand(bits)

    def parallelism(self, weight_bits: int, activation_bits: int) -> float:
        """Products per fusion unit per cycle (pf); 1/4 for 16x16."""
        w, w_passes = _operand(weight_bits)
        a, a_passes = _operand(activation_bits)
        return (8 // a) * (8 // w) / (w_passes * a_passes)

    def layer_cost(self, product: Product, batch: int | None = None) -> BitFusionLayerCost:
        """Cycles, traffic and energy of ``product`` for one batch of frames."""
        b = self.batch if batch is None else batch
        w, a = product.weight_bits, product.activation_bits
        ic, oc = product.point.in_features, product.point.out_features
        if ic <= 0 or oc <= 0:
            raise CostModelError(
                f"{self.name}: weight point {product.point.name!r} needs in_features and "
                "out_features to be costed"
            )
        w_run, w_passes = _operand(w)
        a_run, a_passes = _operand(a)
        pf_native = (8 // a_run) * (8 // w_run)
        k_steps = math.ceil(ic / (self.rows * pf_native))
        compute = b * math.ceil(oc / self.columns) * k_steps * w_passes * a_passes

        half_w = self.weight_buffer_bytes * 8 // 2
        half_in = self.input_buffer_bytes * 8 // 2
        half_out = self.output_buffer_bytes * 8 // 2
        weight_bits = ic * oc * w
        column_bits = ic * w
        if column_bits <= half_w:
            k_tiles = 1
            oc_tiles = math.ceil(oc / (half_w // column_bits))
        else:
            k_tiles = math.ceil(column_bits / half_w)
            oc_tiles = oc
        input_bits = b * ic * a
        input_reads = 1 if input_bits <= half_in else oc_tiles
        output_bits = b * oc * self.accumulator_bits
        psum_bits = 2 * (k_tiles - 1) * output_bits
        dram_bits = weight_bits + input_bits * input_reads + output_bits + psum_bits
        dram_cycles = math.ceil(dram_bits / self.dram_bits_per_cycle)
        first_load = math.ceil(
            (min(weight_bits, half_w) + min(input_bits, half_in)) / self.dram_bits_per_cycle
        )
        last_store = math.ceil(min(output_bits, half_out) / self.dram_bits_per_cycle)
        overlapped = max(0, dram_cycles - first_load - last_store)
        latency = max(compute, overlapped) + first_load + last_store

        psum_updates = compute * self.columns * self.accumulator_bits
        sram_pj = (
            weight_bits * self.weight_write_pj_per_bit
            + b * ic * oc * w * self.weight_read_pj_per_bit
            + input_bits * input_reads * self.input_write_pj_per_bit
            + input_bits * math.ceil(oc / self.columns) * self.input_read_pj_per_bit
            + psum_updates * (self.output_read_pj_per_bit + self.output_write_pj_per_bit)
            + output_bits * self.output_read_pj_per_bit
        )
        return BitFusionLayerCost(
            compute_cycles=compute,
            dram_bits=dram_bits,
            dram_cycles=dram_cycles,
            first_load_cycles=first_load,
            last_store_cycles=last_store,
            latency_cycles=latency,
            sram_pj=sram_pj,
            compute_pj=compute * self.array_pj_per_cycle,
            dram_pj=dram_bits * self.dram_pj_per_bit,
            weight_dram_bits=weight_bits,
        )

    def _totals(
        self, workload: Workload, assignment: BitAssignment
    ) -> tuple[float, float, list[Any]]:
        costs = [(p, self.layer_cost(p)) for p in products(workload, assignment)]
        cycles = sum(c.latency_cycles for _, c in costs) / self.batch
        energy = sum(c.energy_pj for _, c in costs) / self.batch
        return cycles, energy, costs

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        self.require_runnable(workload, assignment)
        cycles, energy, costs = self._totals(workload, assignment)
        base_cycles, base_energy, _ = self._totals(workload, self.baseline_assignment(workload))
        b = self.batch
        rows = []
        for product, cost in costs:
            rows.append(
                {
                    **product_row(product),
                    "pf": self.parallelism(product.weight_bits, product.activation_bits),
                    "compute_cycles": cost.compute_cycles / b,
                    "dram_cycles": cost.dram_cycles / b,
                    "latency_cycles": cost.latency_cycles / b,
                    "bound": "dram" if cost.dram_cycles > cost.compute_cycles else "compute",
                    "energy_pj": cost.energy_pj / b,
                    "dram_energy_pj": cost.dram_pj / b,
                    "memory_bytes": product.point.params * product.weight_bits / 8,
                }
            )
        totals = {
            "speedup": base_cycles / cycles,
            "latency_cycles": cycles,
            "latency_s": cycles / self.frequency_hz,
            "energy": energy,
            "energy_saving": base_energy / energy,
            **memory_totals(workload, assignment),
        }
        notes = [
            f"per frame at batch {b} (frames per weight fetch); speedup and energy_saving over "
            f"all points at {self.baseline_bits}x{self.baseline_bits} bits",
            f"{self.rows}x{self.columns} fusion units at {self.frequency_hz / 1e6:g} MHz, DRAM "
            f"{self.dram_bits_per_cycle} bits/cycle; 16-bit operands run as two 8-bit passes",
        ]
        return self._report(totals, rows, notes)
