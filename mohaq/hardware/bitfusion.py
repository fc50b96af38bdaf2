"""Bit Fusion (Sharma et al., ISCA 2018): MOHAQ's table and an analytic model.

``bitfusion-mohaq`` is the MOHAQ code's model: a layer's speedup over 16x16
bits depends only on weight bits x activation bits (256 -> 1, 128 -> 2,
64 -> 4, 32 -> 8, 16 -> 16, 8 -> 32, <= 4 -> 64). It prices compute alone, as
if weights were always on chip. ``speedup`` is the physical time ratio over
layers, ``sum(MACs) / sum(MACs / layer speedup)``; ``speedup_mohaq`` is the
MAC-weighted mean of the layer speedups, as the MOHAQ code computes it.

``bitfusion`` models the accelerator: a 16 x 32 array of fusion units (2-bit
BitBricks) at 500 MHz with weight/input/output buffers and a 192-bit/cycle DRAM
interface. Per matrix product of B frames (B = ``batch``: frames that share one
pass over the weights; 1 for a recurrent layer, whose next input depends on its
output), :mod:`mohaq.hardware.bitfusion_tiling` picks the loop order and tiling
with the fewest cycles for the configured buffers, as Bit Fusion's simulator
does, and gives:

- compute cycles = B x column groups x input steps x passes, with
  pf = floor(8 / max(a, 2)) x floor(8 / max(w, 2)) products per fusion unit per
  cycle for operands up to 8 bits, an input step being ``rows x pf`` inputs and
  a column group ``columns`` outputs. A 16-bit operand is run as two 8-bit
  halves (temporal decomposition, as the paper's fused 16-bit mode costs):
  passes = 2 per 16-bit operand, so 16x16 takes 4 passes of 8x8. Bits 9 to 15
  cost as 16;
- DRAM traffic of weights, inputs and outputs for that tiling, and latency =
  compute + DRAM stalls + the first load and the last store;
- energy = compute cycles x array energy per cycle + SRAM bits x per-bit
  energies + DRAM bits x 15 pJ. SRAM traffic: every DRAM bit is written to (or
  read from) its buffer; each MAC reads its weight; inputs are read once per
  column group (a row broadcasts them to its columns); each output is read and
  written once per input tile (the columns accumulate within a tile).

``speedup`` is the all-16x16 model's cycles over the assignment's: a physical
time ratio. ``benchmarks/validate_bitfusion.py`` compares the cycles with the
simulator's, layer by layer (``benchmarks/results/bitfusion_validation.md``).

At batch 1 a recurrent layer is bound by weight traffic: its latency and
energy follow the weight bits, not the pf of the fused multipliers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mohaq.hardware.base import (
    ConstantError,
    CostModel,
    CostModelError,
    CostReport,
    Product,
    mac_weighted_mean,
    memory_totals,
    product_row,
    products,
    time_ratio_speedup,
)
from mohaq.hardware.bitfusion_tiling import ArraySpec, LayerShape, Schedule, best_schedule
from mohaq.hardware.constants import GRID_CONSTANTS, Constant, check_constants, common_constants
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


_COMMON = common_constants(
    "allowed_bits",
    "shared_layer_precision",
    "memory_capacity_bytes",
    "baseline_bits",
    *GRID_CONSTANTS,
)


@register_cost_model("bitfusion-mohaq")
class BitFusionMohaqCostModel(CostModel):
    """Bit Fusion as in the MOHAQ code: speedup from a weight x activation bits table.

    Args:
        speedup_per_bit_product: w x a bits -> speedup over 16x16 (> 0); a
            product below the smallest key takes the smallest key's speedup
            (MOHAQ: "4 or less -> 64").
        allowed_bits: precisions of each operand (2/4/8/16).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory (None: unbounded).
        per_channel_weights, asymmetric_activations: the grids the platform
            supports (see :class:`~mohaq.hardware.base.CostModel`; default False).
        baseline_bits: uniform precision of speedup 1.

    Raises:
        ConstantError: a constant of the wrong type or sign, or a table
            without a speedup for a product the allowed bits can form.
    """

    metric_names = ("speedup", "speedup_mohaq", "memory_mb", "memory_bytes")
    higher_is_better = {"speedup": True, "speedup_mohaq": True}
    units = {"memory_mb": "MiB", "memory_bytes": "B"}
    metric_descriptions = {
        "speedup": "physical: total time at the baseline precision / total time",
        "speedup_mohaq": "MOHAQ's MAC-weighted mean of the per-layer speedups",
    }
    constants = {
        "speedup_per_bit_product": Constant(
            "bits_table",
            "weight bits x activation bits -> layer speedup over 16x16",
            minimum=0,
            strict=True,
        ),
        **_COMMON,
    }

    def __init__(
        self,
        *,
        speedup_per_bit_product: Mapping[int, float] = MOHAQ_BITFUSION_SPEEDUP,
        allowed_bits: Sequence[int] = (2, 4, 8, 16),
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 16,
        per_channel_weights: bool = False,
        asymmetric_activations: bool = False,
    ) -> None:
        c = check_constants(self.constants, locals())
        self.speedup_per_bit_product: dict[int, float] = c["speedup_per_bit_product"]
        super().__init__(
            allowed_bits=c["allowed_bits"],
            shared_layer_precision=c["shared_layer_precision"],
            memory_capacity_bytes=c["memory_capacity_bytes"],
            baseline_bits=c["baseline_bits"],
            per_channel_weights=c["per_channel_weights"],
            asymmetric_activations=c["asymmetric_activations"],
        )
        allowed = self.allowed_bits or ()
        uncovered = sorted({w * a for w in allowed for a in allowed if self._lookup(w * a) is None})
        if uncovered:
            raise ConstantError(
                "speedup_per_bit_product",
                self.speedup_per_bit_product,
                f"has no speedup for weight x activation bits {uncovered}",
                f"an entry for every product of allowed_bits {list(allowed)} that is not "
                f"below the smallest key",
            )

    def _lookup(self, bit_product: int) -> float | None:
        if bit_product in self.speedup_per_bit_product:
            return self.speedup_per_bit_product[bit_product]
        smallest = min(self.speedup_per_bit_product)
        if bit_product < smallest:
            return self.speedup_per_bit_product[smallest]
        return None

    def _speedup(self, bit_product: int) -> float:
        speed = self._lookup(bit_product)
        if speed is None:
            raise CostModelError(
                f"{self.name}: no speedup for weight x activation bits = {bit_product}; "
                f"table keys: {sorted(self.speedup_per_bit_product)}"
            )
        return speed

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
        totals = {
            "speedup": time_ratio_speedup(speeds),
            "speedup_mohaq": mac_weighted_mean(speeds),
            **memory_totals(workload, assignment),
        }
        notes = [
            f"speedups over all points at {self.baseline_bits}x{self.baseline_bits} bits, "
            "compute only (MOHAQ's table; weights assumed on chip)"
        ]
        return self._report(totals, rows, notes)


@dataclass(frozen=True)
class BitFusionLayerCost:
    """Cycles, traffic and energy of one product for one batch of frames.

    Attributes:
        schedule: the loop order and tiling chosen, with its cycles and traffic.
        compute_cycles: cycles the array computes.
        dram_bits: bits moved to and from DRAM.
        dram_cycles: those bits over the DRAM interface width.
        latency_cycles: compute plus DRAM stalls, first load and last store.
        compute_pj, sram_pj, dram_pj: the energy's parts.
    """

    schedule: Schedule
    compute_cycles: int
    dram_bits: int
    dram_cycles: int
    latency_cycles: int
    compute_pj: float
    sram_pj: float
    dram_pj: float

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


def _positive_int(doc: str) -> Constant:
    return Constant("int", doc, minimum=0, strict=True)


def _pj_per_bit(doc: str) -> Constant:
    return Constant("number", f"{doc}, pJ per bit", minimum=0)


@register_cost_model("bitfusion")
class BitFusionCostModel(CostModel):
    """Analytic Bit Fusion: best tiling per layer; cycles, DRAM traffic, latency, energy.

    Args:
        rows: fusion-unit rows (input dimension), 16.
        columns: fusion-unit columns (output dimension), 32.
        frequency_hz: clock, 500 MHz.
        weight_buffer_bytes: 64 KiB (half used while the other half fills).
        input_buffer_bytes: 32 KiB.
        output_buffer_bytes: 16 KiB.
        dram_bits_per_cycle: 192.
        batch: frames per pass over the weights (1: a recurrent layer at batch 1).
        accumulator_bits: width of outputs and partial sums, 32.
        array_pj_per_cycle: energy of one cycle of the whole array, 235.104 pJ.
        dram_pj_per_bit: 15 pJ.
        weight_read_pj_per_bit, weight_write_pj_per_bit,
        input_read_pj_per_bit, input_write_pj_per_bit,
        output_read_pj_per_bit, output_write_pj_per_bit: SRAM energies (45 nm).
        allowed_bits: operand precisions (2/4/8 native, 16 as two 8-bit passes).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory in DRAM (None: unbounded).
        per_channel_weights, asymmetric_activations: the grids the platform
            supports (see :class:`~mohaq.hardware.base.CostModel`; default False).
        baseline_bits: uniform precision that ``speedup`` and
            ``energy_saving`` compare with (16: 16x16, like MOHAQ's table).

    Raises:
        ConstantError: a constant of the wrong type or sign, or an allowed bit
            width above 16.
    """

    metric_names = (
        "speedup",
        "latency_cycles",
        "latency_s",
        "energy",
        "energy_saving",
        "dram_bits",
        "memory_mb",
        "memory_bytes",
    )
    higher_is_better = {"speedup": True, "energy_saving": True}
    units = {
        "latency_cycles": "cycles/frame",
        "latency_s": "s/frame",
        "energy": "pJ/frame",
        "dram_bits": "bits/frame",
        "memory_mb": "MiB",
        "memory_bytes": "B",
    }
    metric_descriptions = {
        "speedup": "physical: cycles at the baseline precision / cycles",
        "energy_saving": "energy at the baseline precision / energy",
    }
    constants = {
        "rows": _positive_int("fusion-unit rows"),
        "columns": _positive_int("fusion-unit columns"),
        "frequency_hz": Constant("number", "clock, Hz", minimum=0, strict=True),
        "weight_buffer_bytes": _positive_int("weight buffer, bytes"),
        "input_buffer_bytes": _positive_int("input buffer, bytes"),
        "output_buffer_bytes": _positive_int("output buffer, bytes"),
        "dram_bits_per_cycle": _positive_int("DRAM interface, bits per cycle"),
        "batch": _positive_int("frames per pass over the weights"),
        "accumulator_bits": _positive_int("width of outputs and partial sums, bits"),
        "array_pj_per_cycle": Constant(
            "number", "energy of one cycle of the whole array, pJ", minimum=0, strict=True
        ),
        "dram_pj_per_bit": _pj_per_bit("DRAM access energy"),
        "weight_read_pj_per_bit": _pj_per_bit("weight buffer read energy"),
        "weight_write_pj_per_bit": _pj_per_bit("weight buffer write energy"),
        "input_read_pj_per_bit": _pj_per_bit("input buffer read energy"),
        "input_write_pj_per_bit": _pj_per_bit("input buffer write energy"),
        "output_read_pj_per_bit": _pj_per_bit("output buffer read energy"),
        "output_write_pj_per_bit": _pj_per_bit("output buffer write energy"),
        **_COMMON,
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
        allowed_bits: Sequence[int] = (2, 4, 8, 16),
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 16,
        per_channel_weights: bool = False,
        asymmetric_activations: bool = False,
    ) -> None:
        c = check_constants(self.constants, locals())
        self.rows: int = c["rows"]
        self.columns: int = c["columns"]
        self.frequency_hz: float = c["frequency_hz"]
        self.weight_buffer_bytes: int = c["weight_buffer_bytes"]
        self.input_buffer_bytes: int = c["input_buffer_bytes"]
        self.output_buffer_bytes: int = c["output_buffer_bytes"]
        self.dram_bits_per_cycle: int = c["dram_bits_per_cycle"]
        self.batch: int = c["batch"]
        self.accumulator_bits: int = c["accumulator_bits"]
        self.array_pj_per_cycle: float = c["array_pj_per_cycle"]
        self.dram_pj_per_bit: float = c["dram_pj_per_bit"]
        self.weight_read_pj_per_bit: float = c["weight_read_pj_per_bit"]
        self.weight_write_pj_per_bit: float = c["weight_write_pj_per_bit"]
        self.input_read_pj_per_bit: float = c["input_read_pj_per_bit"]
        self.input_write_pj_per_bit: float = c["input_write_pj_per_bit"]
        self.output_read_pj_per_bit: float = c["output_read_pj_per_bit"]
        self.output_write_pj_per_bit: float = c["output_write_pj_per_bit"]
        too_wide = [b for b in c["allowed_bits"] if b > 16]
        if too_wide:
            raise ConstantError(
                "allowed_bits",
                list(c["allowed_bits"]),
                f"holds {too_wide}, wider than 16 bits",
                "bit widths 1 to 16 (2/4/8 native, 16 as two 8-bit passes)",
            )
        super().__init__(
            allowed_bits=c["allowed_bits"],
            shared_layer_precision=c["shared_layer_precision"],
            memory_capacity_bytes=c["memory_capacity_bytes"],
            baseline_bits=c["baseline_bits"],
            per_channel_weights=c["per_channel_weights"],
            asymmetric_activations=c["asymmetric_activations"],
        )
        # (in, out, weight bits, activation bits, batch) -> best schedule; the
        # search prices the same few shapes at the same few precisions again and again.
        self._schedules: dict[tuple[int, int, int, int, int], Schedule] = {}

    def array(self) -> ArraySpec:
        """The array and buffers (usable halves) the tiling must fit."""
        return ArraySpec(
            rows=self.rows,
            columns=self.columns,
            weight_buffer_bits=self.weight_buffer_bytes * 8 // 2,
            input_buffer_bits=self.input_buffer_bytes * 8 // 2,
            output_buffer_bits=self.output_buffer_bytes * 8 // 2,
            dram_bits_per_cycle=self.dram_bits_per_cycle,
            accumulator_bits=self.accumulator_bits,
        )

    def parallelism(self, weight_bits: int, activation_bits: int) -> float:
        """Products per fusion unit per cycle (pf); 1/4 for 16x16."""
        w, w_passes = _operand(weight_bits)
        a, a_passes = _operand(activation_bits)
        return (8 // a) * (8 // w) / (w_passes * a_passes)

    def schedule(self, product: Product, batch: int | None = None) -> Schedule:
        """The best loop order and tiling of ``product`` for one batch of frames.

        Raises:
            CostModelError: the product has no shape, or no tiling fits the buffers.
        """
        b = self.batch if batch is None else batch
        w, a = product.weight_bits, product.activation_bits
        ic, oc = product.point.in_features, product.point.out_features
        if ic <= 0 or oc <= 0:
            raise CostModelError(
                f"{self.name}: weight point {product.point.name!r} needs in_features and "
                "out_features to be costed"
            )
        key = (ic, oc, w, a, b)
        if key not in self._schedules:
            w_run, w_passes = _operand(w)
            a_run, a_passes = _operand(a)
            shape = LayerShape(
                in_features=ic,
                out_features=oc,
                batch=b,
                weight_bits=w,
                activation_bits=a,
                pf=(8 // a_run) * (8 // w_run),
                passes=w_passes * a_passes,
            )
            try:
                self._schedules[key] = best_schedule(self.array(), shape)
            except ValueError as exc:
                raise CostModelError(f"{self.name}: {exc}") from exc
        return self._schedules[key]

    def layer_cost(self, product: Product, batch: int | None = None) -> BitFusionLayerCost:
        """Cycles, traffic and energy of ``product`` for one batch of frames."""
        b = self.batch if batch is None else batch
        s = self.schedule(product, b)
        w, a = product.weight_bits, product.activation_bits
        ic, oc = product.point.in_features, product.point.out_features
        psum_bits = b * s.column_groups * self.columns * self.accumulator_bits * s.in_tile_count
        sram_pj = (
            s.weight_dram_bits * self.weight_write_pj_per_bit
            + b * ic * oc * w * self.weight_read_pj_per_bit
            + s.input_dram_bits * self.input_write_pj_per_bit
            + b * ic * a * s.column_groups * self.input_read_pj_per_bit
            + (s.output_load_bits + psum_bits) * self.output_write_pj_per_bit
            + (s.output_store_bits + psum_bits) * self.output_read_pj_per_bit
        )
        return BitFusionLayerCost(
            schedule=s,
            compute_cycles=s.compute_cycles,
            dram_bits=s.dram_bits,
            dram_cycles=s.dram_cycles(self.dram_bits_per_cycle),
            latency_cycles=s.latency_cycles,
            compute_pj=s.compute_cycles * self.array_pj_per_cycle,
            sram_pj=sram_pj,
            dram_pj=s.dram_bits * self.dram_pj_per_bit,
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
                    "schedule": cost.schedule.describe(),
                    "compute_cycles": cost.compute_cycles / b,
                    "dram_bits": cost.dram_bits / b,
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
            "dram_bits": sum(c.dram_bits for _, c in costs) / b,
            **memory_totals(workload, assignment),
        }
        notes = [
            f"per frame at batch {b} (frames per pass over the weights); speedup and "
            f"energy_saving over all points at {self.baseline_bits}x{self.baseline_bits} bits",
            f"{self.rows}x{self.columns} fusion units at {self.frequency_hz / 1e6:g} MHz, DRAM "
            f"{self.dram_bits_per_cycle} bits/cycle; 16-bit operands run as two 8-bit passes; "
            "schedule: loops outermost first, then batch/input/output tile sizes",
        ]
        return self._report(totals, rows, notes)
