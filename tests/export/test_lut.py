"""Sigmoid/tanh tables: hand-computed entries and interpolation, precision of the defaults."""

from __future__ import annotations

import pytest
import torch

from mohaq.export.fixed_point import FixedPointError
from mohaq.export.lut import build_lookup_table, table_from_values


def test_a_small_sigmoid_table_by_hand() -> None:
    # Inputs with 1 fraction bit, range [-2, 2], 4 segments: entries at -2, -1, 0, 1, 2.
    table = build_lookup_table(
        "sigmoid", input_frac_bits=1, range_log2=1, segments_log2=2, output_frac_bits=15
    )
    # round(sigmoid(x) * 2^15): 3906.07, 8812.66, 16384, 23955.34, 28861.93
    assert table.values.tolist() == [3906, 8813, 16384, 23955, 28862]
    assert table.segment_shift == 1
    # x = 0.5 (integer 1): midway between 16384 and 23955: 16384 + (7571 + 1) >> 1.
    # x = -1.5 (-3): 3906 + (4907 + 1) >> 1. x = 2 and beyond: the last entry.
    assert table(torch.tensor([1, -3, 0, 4, 100, -100])).tolist() == [
        20170,
        6360,
        16384,
        28862,
        28862,
        3906,
    ]


def test_default_tables_stay_within_2_to_the_minus_19_of_the_functions() -> None:
    step = 2**24  # 1.0 at the default 24 fraction bits, input and output
    x = torch.arange(-20 * step, 20 * step, 4093)
    for name, function in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        table = build_lookup_table(name)
        error = (table(x).double() - function(x.double() / step) * step).abs().max()
        assert error < step * 2**-19, name
    assert int(build_lookup_table("sigmoid")(torch.tensor(0))) == step // 2
    assert int(build_lookup_table("tanh")(torch.tensor(0))) == 0


def test_tables_read_back_and_bad_arguments() -> None:
    table = build_lookup_table("tanh")
    again = table_from_values(
        "tanh", table.values, input_frac_bits=24, range_log2=3, output_frac_bits=24
    )
    assert torch.equal(
        again(torch.arange(-40000, 40000, 37)), table(torch.arange(-40000, 40000, 37))
    )
    with pytest.raises(ValueError, match="2\\^k \\+ 1"):
        table_from_values(
            "tanh", torch.zeros(6), input_frac_bits=24, range_log2=3, output_frac_bits=24
        )
    with pytest.raises(ValueError, match="sigmoid, tanh"):
        build_lookup_table("relu")
    with pytest.raises(FixedPointError, match="finer"):
        build_lookup_table("sigmoid", input_frac_bits=0, range_log2=1, segments_log2=4)
