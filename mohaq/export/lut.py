"""Sigmoid and tanh as integer lookup tables with linear interpolation.

A table holds ``2^k + 1`` outputs with ``Q`` fraction bits (``round(f(x) * 2^Q)``,
saturated to ``Q + 1``-bit signed) at evenly spaced inputs over ``[-2^r, 2^r]``.
Its input is a fixed-point value with ``F`` fraction bits (any int64; values
beyond the range are clamped, where both functions are within 2^-21 of their
limits). An input's upper bits pick the segment, its lower bits interpolate
between the two entries with an integer multiply and a rounding shift: a
piecewise-linear approximation.

The defaults (``F = Q = 24``, 4096 segments, int32 entries, 16 KB a table) put
the gates within 2^-19 of the float functions (interpolation error). That much is needed for the
integer model to round its 16-bit states where the fake-quantized model
does: a gate error ``e`` moves an SRU state update by ``e * |c - U|``, and at
Q15 (int16 tables) that is close to half a state step, so states fork and
frame decisions follow (99.3% argmax agreement on the quickstart model
instead of 99.9%). An operator point with fewer bits requantizes the gate to
its own scale.

tanh could reuse the sigmoid table (``tanh(x) = 2 sigmoid(2x) - 1``); a second
table is kept instead so each function has its own range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mohaq.export.fixed_point import FixedPointError

# Fraction bits of gate pre-activations (the table input) and of the gates.
PREACTIVATION_FRAC_BITS = 24
OUTPUT_FRAC_BITS = 24
FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}
# Input range 2^r per function: sigmoid(-16) < 2^-23, 1 - tanh(8) < 2^-21.
DEFAULT_RANGE_LOG2 = {"sigmoid": 4, "tanh": 3}
DEFAULT_SEGMENTS_LOG2 = 12


@dataclass(frozen=True)
class LookupTable:
    """An interpolated table of one function.

    Attributes:
        function: ``"sigmoid"`` or ``"tanh"``.
        values: int64 tensor of ``2^segments_log2 + 1`` outputs.
        input_frac_bits: fraction bits ``F`` of the input.
        range_log2: the table covers inputs ``[-2^r, 2^r]``.
        segments_log2: ``k``, with ``2^k`` segments.
        output_frac_bits: fraction bits ``Q`` of the outputs.
    """

    function: str
    values: Tensor
    input_frac_bits: int
    range_log2: int
    segments_log2: int
    output_frac_bits: int = OUTPUT_FRAC_BITS

    @property
    def one(self) -> int:
        """1.0 in the output format."""
        return 1 << self.output_frac_bits

    @property
    def segment_shift(self) -> int:
        """Input LSBs per segment, as a power of two: ``r + 1 + F - k``."""
        return self.range_log2 + 1 + self.input_frac_bits - self.segments_log2

    def __call__(self, x: Tensor) -> Tensor:
        """The outputs (``Q`` fraction bits) for fixed-point inputs ``x`` (``F`` fraction bits)."""
        shift = self.segment_shift
        limit = 1 << (self.range_log2 + self.input_frac_bits)
        offset = x.to(torch.int64).clamp(-limit, limit) + limit  # [0, 2^(r+1+F)]
        last = (1 << self.segments_log2) - 1
        index = (offset >> shift).clamp(max=last)
        fraction = offset - (index << shift)  # in [0, 2^shift]; 2^shift only at the top
        low = self.values[index]
        step = self.values[index + 1] - low
        half = (1 << shift) >> 1
        return low + ((step * fraction + half) >> shift)


def build_lookup_table(
    function: str,
    *,
    input_frac_bits: int = PREACTIVATION_FRAC_BITS,
    range_log2: int | None = None,
    segments_log2: int = DEFAULT_SEGMENTS_LOG2,
    output_frac_bits: int = OUTPUT_FRAC_BITS,
) -> LookupTable:
    """Tabulates ``function`` with ``output_frac_bits`` fraction bits.

    Raises:
        ValueError: on an unknown function.
        FixedPointError: if the segments are finer than the input's LSB.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}; got {function!r}")
    range_log2 = DEFAULT_RANGE_LOG2[function] if range_log2 is None else range_log2
    if range_log2 + 1 + input_frac_bits < segments_log2:
        raise FixedPointError(
            f"{2**segments_log2} segments over [-2^{range_log2}, 2^{range_log2}] are finer than "
            f"the input step 2^-{input_frac_bits}"
        )
    grid = torch.linspace(
        -(2.0**range_log2), 2.0**range_log2, 2**segments_log2 + 1, dtype=torch.float64
    )
    top = 2**output_frac_bits
    values = torch.round(FUNCTIONS[function](grid) * top).clamp(-top, top - 1).to(torch.int64)
    return LookupTable(
        function, values, input_frac_bits, range_log2, segments_log2, output_frac_bits
    )


def table_from_values(
    function: str, values: Tensor, *, input_frac_bits: int, range_log2: int, output_frac_bits: int
) -> LookupTable:
    """A table read back from a file (the segment count follows from its length).

    Raises:
        ValueError: if the length is not ``2^k + 1``.
    """
    segments = values.numel() - 1
    if segments < 1 or segments & (segments - 1):
        raise ValueError(f"a {function} table must have 2^k + 1 entries; got {values.numel()}")
    return LookupTable(
        function,
        values.to(torch.int64).flatten(),
        input_frac_bits,
        range_log2,
        segments.bit_length() - 1,
        output_frac_bits,
    )
