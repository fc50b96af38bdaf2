"""Loop orders and tilings of Bit Fusion's array, by hand on tiny layers."""

from __future__ import annotations

import json
import math
from itertools import permutations
from pathlib import Path

import pytest

from mohaq.hardware import CostModelError, get_cost_model, load_platform
from mohaq.hardware.base import Product
from mohaq.hardware.bitfusion_tiling import (
    LOOPS,
    ArraySpec,
    LayerShape,
    best_schedule,
    evaluate,
)
from mohaq.quant.points import QuantPoint

# 2 rows x 2 columns, 8-bit DRAM words; the input buffer's usable half holds two
# 8-bit inputs; weights and outputs have room to spare.
SMALL = ArraySpec(
    rows=2,
    columns=2,
    weight_buffer_bits=10_000,
    input_buffer_bits=16,
    output_buffer_bits=10_000,
    dram_bits_per_cycle=8,
    accumulator_bits=8,
)
# 4 inputs -> 4 outputs, one frame, 8x8 bits (pf 1, one pass)
LAYER = LayerShape(4, 4, 1, 8, 8, pf=1, passes=1)
TILES = {"batch": 1, "in": 2, "out": 2}


def test_inputs_are_read_again_per_output_tile_only_when_the_output_loop_is_outside() -> None:
    # 4 inputs x 8 bits = 32 bits do not fit in the 16 usable bits.
    out_inner = evaluate(SMALL, LAYER, ("batch", "in", "out"), TILES)
    in_inner = evaluate(SMALL, LAYER, ("batch", "out", "in"), TILES)
    assert out_inner is not None and in_inner is not None
    # out innermost: an input tile stays while both output tiles use it -> read once
    assert out_inner.input_dram_bits == 4 * 8
    # in innermost: the 2 input tiles stream past each output tile -> read twice
    assert in_inner.input_dram_bits == 2 * 4 * 8
    # weights (4 x 4 x 8 = 128 bits) fit and are read once either way; outputs
    # (4 x 8 bits) fit too, so they are loaded and stored once
    for schedule in (out_inner, in_inner):
        assert schedule.weight_dram_bits == 128
        assert schedule.output_load_bits == schedule.output_store_bits == 32
        # 2 column groups x 2 input steps of 2 rows
        assert schedule.compute_cycles == 4
    # Transfers happen at the outermost level where an operand's working set fits:
    # all 128 weight bits, one 16-bit input tile, all 32 output bits. First load
    # 128 + 16 + 32 = 176 bits (22 cycles), last store 32 bits (4 cycles).
    assert out_inner.first_load_bits == in_inner.first_load_bits == 176
    assert out_inner.last_store_bits == 32
    # out innermost: the other 128 + 32 + 64 - 176 - 32 = 16 bits overlap in 2 cycles,
    # under the 4 compute cycles: latency = 4 + 22 + 4
    assert out_inner.latency_cycles == 30
    # in innermost: 32 more input bits: 48 bits overlap in 6 cycles, 2 past compute
    assert in_inner.latency_cycles == 4 + 2 + 22 + 4


def test_best_schedule_is_the_fastest_of_every_order_and_tiling() -> None:
    best = best_schedule(SMALL, LAYER)
    fastest = min(
        s.latency_cycles
        for order in permutations(LOOPS)
        for ic in (2, 4)
        for oc in (2, 4)
        if (s := evaluate(SMALL, LAYER, order, {"batch": 1, "in": ic, "out": oc})) is not None
    )
    assert best.latency_cycles == fastest == 30
    assert best.input_dram_bits == 32  # the order that reads the inputs once


def test_tiles_that_overflow_a_buffer_are_refused() -> None:
    # a 4-input tile is 32 bits, over the 16 usable bits of the input buffer
    assert evaluate(SMALL, LAYER, ("batch", "in", "out"), {"batch": 1, "in": 4, "out": 2}) is None
    tiny = ArraySpec(2, 2, 8, 8, 8, 8, 8)  # not even one weight column of 2 x 8 bits x 2
    with pytest.raises(ValueError, match="no tiling of a 4 x 4 product"):
        best_schedule(tiny, LAYER)
    model = get_cost_model("bitfusion", weight_buffer_bytes=8)
    point = QuantPoint("l.weight", "weight", "l", 16, 16, 4, 4, "l.input")
    with pytest.raises(CostModelError, match="no tiling of a 4 x 4 product"):
        model.schedule(Product(point, 8, 8))


def test_4096_square_layer_at_batch_16_matches_the_simulator() -> None:
    # Bit Fusion's simulator, results/bitfusion-eyeriss-sim-sweep.csv, RNN
    # matmul (4096 -> 4096, batch 16, 4-bit weights and inputs): 394,583 cycles.
    model = get_cost_model("bitfusion", batch=16)
    point = QuantPoint("rnn.weight", "weight", "rnn", 4096**2, 4096**2, 4096, 4096, "rnn.input")
    cost = model.layer_cost(Product(point, 4, 4))
    # weights 4096 x 4096 x 4 once; inputs 16 x 4096 x 4 once (the output loop runs
    # inside the input loop); outputs 16 x 4096 x 32 bits, loaded and stored once
    # per each of the 2 input tiles (a 2048-input tile of 32 columns fills half
    # the weight buffer)
    weights, inputs, outputs = 4096 * 4096 * 4, 16 * 4096 * 4, 16 * 4096 * 32
    assert cost.dram_bits == weights + inputs + 2 * 2 * outputs
    # compute: 16 frames x 128 column groups x 4096 / (16 rows x pf 4) steps
    assert cost.compute_cycles == 16 * 128 * 64
    # DRAM-bound: (75,759,616 bits) / 192 = 394,581.3 plus the rounding of the
    # first load and last store
    assert cost.latency_cycles == 394_583
    assert math.ceil(cost.dram_bits / 192) == 394_582


def test_weights_are_fetched_once_per_batch_when_they_fit() -> None:
    # batch 16 vs batch 1: a 256 x 3300 layer's weights (6.8 Mbit at 8 bits) come
    # from DRAM once per batch, so the weight traffic per frame falls 16x
    point = QuantPoint("sru1.weight", "weight", "sru1", 844_800, 844_800, 256, 3300, "sru1.input")
    one = get_cost_model("bitfusion", batch=1).layer_cost(Product(point, 8, 8))
    sixteen = get_cost_model("bitfusion", batch=16).layer_cost(Product(point, 8, 8))
    assert one.schedule.weight_dram_bits == sixteen.schedule.weight_dram_bits == 256 * 3300 * 8
    assert sixteen.schedule.input_dram_bits == 16 * one.schedule.input_dram_bits


def test_every_recorded_simulator_layer_is_within_15_percent() -> None:
    # Bit Fusion's simulator run on each layer by benchmarks/validate_bitfusion.py
    # (58 fully connected layers: MOHAQ's SRU shapes and 4096 x 4096 at batch 1 and
    # 16, 8/4/2-bit operands, and the simulator's own benchmark layers)
    recorded = Path(__file__).parents[2] / "benchmarks" / "results" / "bitfusion_simulator.json"
    layers = json.loads(recorded.read_text())["layers"]
    assert len(layers) == 58
    model = load_platform("bitfusion")
    errors = []
    for layer in layers:
        i, o = layer["in"], layer["out"]
        point = QuantPoint("l.weight", "weight", "l", i * o, i * o, i, o, "l.input")
        cost = model.layer_cost(Product(point, layer["w_bits"], layer["a_bits"]), layer["batch"])
        errors.append(abs(cost.latency_cycles / layer["cycles"] - 1))
    assert max(errors) <= 0.15
