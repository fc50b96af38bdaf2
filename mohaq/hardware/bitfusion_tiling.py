"""Loop order and tiling of a matrix product on Bit Fusion's array.

A product of ``batch`` frames, ``in_features`` inputs and ``out_features``
outputs runs as three nested loops over tiles: ``batch``, ``in`` (the
reduction) and ``out``, in one of their 6 orders. Like Bit Fusion's own
simulator, the optimizer here tries every order and every tiling whose tiles
fit in half of each buffer (the other half fills meanwhile: double
buffering) and keeps the one with the fewest cycles; ties go to the one with
the least DRAM traffic. Tile sizes double from the smallest useful one (1
frame, one row's worth of inputs, one column group of outputs) up to the
whole dimension.

DRAM traffic of an operand, walking the loops from the innermost out: a loop
over a dimension the operand has (weights: in, out; inputs: batch, in;
outputs: batch, out) brings new data, and the operand's working set grows
with it; a loop over a dimension it lacks reuses what is in the buffer, as
long as the working set gathered inside that loop still fits in half the
buffer. Once it does not, every outer loop fetches the operand again. So an
input that does not fit is read again for each output tile only when the
output loop runs outside the input loop, never regardless of the order.

Conventions (those of the simulator):

- weights are laid out in DRAM and the weight buffer as the array reads them:
  each tile's input dimension padded to a multiple of ``rows x pf`` (pf: the
  products a fusion unit computes per cycle at these precisions);
- outputs and partial sums are ``accumulator_bits`` wide, padded to a multiple
  of ``columns``; each output tile is loaded into the output buffer before it
  accumulates (partial sums of an earlier pass over the inputs, or initial
  values) and stored after, so outputs cost a load and a store per visit;
- an operand's transfers happen at the outermost loop level where its working
  set still fits (a block); the first block of each operand loads before
  compute starts and the last output block stores after it ends; the rest of
  the traffic overlaps compute, so latency = compute + max(0, overlapped DRAM
  cycles - compute) + first load + last store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations

LOOPS: tuple[str, ...] = ("batch", "in", "out")

#: The loops whose dimension each operand has.
OPERAND_LOOPS: dict[str, frozenset[str]] = {
    "weights": frozenset({"in", "out"}),
    "inputs": frozenset({"batch", "in"}),
    "outputs": frozenset({"batch", "out"}),
}


@dataclass(frozen=True)
class ArraySpec:
    """The parts of the accelerator that decide a tiling.

    Attributes:
        rows: fusion-unit rows (the input dimension of one cycle).
        columns: fusion-unit columns (outputs of one cycle).
        weight_buffer_bits, input_buffer_bits, output_buffer_bits: the usable
            half of each buffer, in bits.
        dram_bits_per_cycle: DRAM interface width.
        accumulator_bits: width of outputs and partial sums.
    """

    rows: int
    columns: int
    weight_buffer_bits: int
    input_buffer_bits: int
    output_buffer_bits: int
    dram_bits_per_cycle: int
    accumulator_bits: int


@dataclass(frozen=True)
class LayerShape:
    """One matrix product for a batch of frames, at its operands' precisions.

    Attributes:
        in_features, out_features: the product's shape.
        batch: frames that share one pass over the weights.
        weight_bits, activation_bits: stored precision of each operand.
        pf: products per fusion unit per cycle at the precisions one pass runs.
        passes: passes per product (2 per 16-bit operand, run as two 8-bit halves).
    """

    in_features: int
    out_features: int
    batch: int
    weight_bits: int
    activation_bits: int
    pf: int
    passes: int


@dataclass(frozen=True)
class Schedule:
    """A loop order and tiling with its cycles and DRAM traffic (one batch).

    Attributes:
        order: the loops, outermost first.
        batch_tile, in_tile, out_tile: tile sizes.
        compute_cycles: cycles the array computes.
        weight_dram_bits, input_dram_bits: bits loaded from DRAM.
        output_load_bits, output_store_bits: output bits loaded and stored.
        first_load_bits: loaded before compute starts (first blocks).
        last_store_bits: stored after compute ends (last output block).
        latency_cycles: compute plus stalls on DRAM.
        in_tile_count: tiles of the input dimension.
        column_groups: sum over output tiles of their column groups.
    """

    order: tuple[str, ...]
    batch_tile: int
    in_tile: int
    out_tile: int
    compute_cycles: int
    weight_dram_bits: int
    input_dram_bits: int
    output_load_bits: int
    output_store_bits: int
    first_load_bits: int
    last_store_bits: int
    latency_cycles: int
    in_tile_count: int
    column_groups: int

    @property
    def dram_bits(self) -> int:
        return (
            self.weight_dram_bits
            + self.input_dram_bits
            + self.output_load_bits
            + self.output_store_bits
        )

    def dram_cycles(self, dram_bits_per_cycle: int) -> int:
        return math.ceil(self.dram_bits / dram_bits_per_cycle)

    def describe(self) -> str:
        """E.g. ``in>out>batch b16 i2048 o32`` (loops outermost first, tile sizes)."""
        return f"{'>'.join(self.order)} b{self.batch_tile} i{self.in_tile} o{self.out_tile}"


def _pad(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def _tile_sizes(extent: int, smallest: int) -> list[int]:
    sizes = []
    size = max(1, smallest)
    while size < extent:
        sizes.append(size)
        size *= 2
    sizes.append(extent)
    return sizes


def _split(extent: int, tile: int) -> tuple[int, int]:
    """(number of full tiles, size of the last partial tile or 0)."""
    return extent // tile, extent % tile


def _over_tiles(extent: int, tile: int, cost: int) -> int:
    """Sum over the tiles of ``extent`` of ``ceil(tile size / cost)``."""
    full, rest = _split(extent, tile)
    return full * math.ceil(tile / cost) + (math.ceil(rest / cost) if rest else 0)


def _traffic(
    operand: str, order: tuple[str, ...], trips: dict[str, int], tile_bits: int, capacity: int
) -> tuple[int, int]:
    """(times the operand's data comes from DRAM, bits of one resident block).

    The resident block is the operand's working set at the outermost loop level
    where it still fits the buffer: its transfers happen at that level, so the
    first block loads before compute can start.
    """
    own = OPERAND_LOOPS[operand]
    working_set, resident, spilled, times = tile_bits, tile_bits, False, 1
    for loop in reversed(order):
        if loop in own:
            working_set *= trips[loop]
            spilled = spilled or working_set > capacity
            if not spilled:
                resident = working_set
        elif spilled:
            times *= trips[loop]
    return times, resident


def evaluate(
    array: ArraySpec, layer: LayerShape, order: tuple[str, ...], tiles: dict[str, int]
) -> Schedule | None:
    """The schedule of one order and tiling; None when a tile does not fit its buffer."""
    lane = array.rows * layer.pf
    b, ic, oc = tiles["batch"], tiles["in"], tiles["out"]
    weight_tile = _pad(ic, lane) * oc * layer.weight_bits
    input_tile = b * ic * layer.activation_bits
    output_tile = b * _pad(oc, array.columns) * array.accumulator_bits
    if (
        weight_tile > array.weight_buffer_bits
        or input_tile > array.input_buffer_bits
        or output_tile > array.output_buffer_bits
    ):
        return None
    extents = {"batch": layer.batch, "in": layer.in_features, "out": layer.out_features}
    trips = {loop: math.ceil(extents[loop] / tiles[loop]) for loop in LOOPS}

    in_full, in_rest = _split(layer.in_features, ic)
    padded_in = in_full * _pad(ic, lane) + (_pad(in_rest, lane) if in_rest else 0)
    weights = padded_in * layer.out_features * layer.weight_bits
    inputs = layer.batch * layer.in_features * layer.activation_bits
    column_groups = _over_tiles(layer.out_features, oc, array.columns)
    outputs = layer.batch * column_groups * array.columns * array.accumulator_bits

    weight_times, weight_block = _traffic(
        "weights", order, trips, weight_tile, array.weight_buffer_bits
    )
    input_times, input_block = _traffic("inputs", order, trips, input_tile, array.input_buffer_bits)
    output_times, output_block = _traffic(
        "outputs", order, trips, output_tile, array.output_buffer_bits
    )
    weights *= weight_times
    inputs *= input_times
    outputs *= output_times

    in_steps = _over_tiles(layer.in_features, ic, lane)
    compute = layer.batch * column_groups * in_steps * layer.passes
    first = weight_block + input_block + output_block
    last = output_block
    width = array.dram_bits_per_cycle
    overlapped = math.ceil(max(0, weights + inputs + 2 * outputs - first - last) / width)
    latency = compute + max(0, overlapped - compute) + math.ceil(first / width)
    latency += math.ceil(last / width)
    return Schedule(
        order=order,
        batch_tile=b,
        in_tile=ic,
        out_tile=oc,
        compute_cycles=compute,
        weight_dram_bits=weights,
        input_dram_bits=inputs,
        output_load_bits=outputs,
        output_store_bits=outputs,
        first_load_bits=first,
        last_store_bits=last,
        latency_cycles=latency,
        in_tile_count=trips["in"],
        column_groups=column_groups,
    )


def best_schedule(array: ArraySpec, layer: LayerShape) -> Schedule:
    """The order and tiling with the fewest cycles (then the least DRAM traffic).

    Raises:
        ValueError: no tiling fits the buffers (even one frame, one lane of
            inputs and one column group of outputs overflow them).
    """
    lane = array.rows * layer.pf
    best: Schedule | None = None
    for b in _tile_sizes(layer.batch, 1):
        for ic in _tile_sizes(layer.in_features, lane):
            for oc in _tile_sizes(layer.out_features, array.columns):
                tiles = {"batch": b, "in": ic, "out": oc}
                for order in permutations(LOOPS):
                    schedule = evaluate(array, layer, order, tiles)
                    if schedule is None:
                        continue
                    if best is None or (schedule.latency_cycles, schedule.dram_bits) < (
                        best.latency_cycles,
                        best.dram_bits,
                    ):
                        best = schedule
    if best is None:
        raise ValueError(
            f"no tiling of a {layer.in_features} x {layer.out_features} product "
            f"(batch {layer.batch}, {layer.weight_bits}/{layer.activation_bits} bits) fits "
            f"the buffers: weights {array.weight_buffer_bits}, inputs "
            f"{array.input_buffer_bits}, outputs {array.output_buffer_bits} bits usable"
        )
    return best
