"""Packing signed integers of any width from 2 to 16 bits into bytes.

Values are written as ``bits``-bit two's complement fields into a
little-endian bit stream: value ``i`` occupies stream bits ``i*bits`` to
``i*bits + bits - 1``, and stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``.
So at 4 bits byte ``j`` holds value ``2j`` in its low nibble and ``2j + 1`` in
its high nibble; at 2 bits four values per byte, lowest bits first; at 8 and
16 bits the bytes are int8 and little-endian int16. The last byte is padded
with zero bits: a tensor of ``n`` values takes ``ceil(n * bits / 8)`` bytes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

PACKING = "little-endian bit stream, two's complement, value i at bits [i*b, (i+1)*b)"
MIN_PACK_BITS, MAX_PACK_BITS = 2, 16


def _check_bits(bits: int) -> None:
    if (
        isinstance(bits, bool)
        or not isinstance(bits, int)
        or not MIN_PACK_BITS <= bits <= MAX_PACK_BITS
    ):
        raise ValueError(
            f"bits must be an integer from {MIN_PACK_BITS} to {MAX_PACK_BITS}; got {bits!r}"
        )


def packed_size(count: int, bits: int) -> int:
    """Bytes of ``count`` packed ``bits``-bit values: ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    return (count * bits + 7) // 8


def pack(values: Tensor, bits: int) -> Tensor:
    """Packs a tensor of signed integers (flattened, row-major) into uint8.

    Raises:
        ValueError: on bits outside 2..16, a non-integer tensor, or a value
            outside ``[-2^(bits-1), 2^(bits-1) - 1]``.
    """
    _check_bits(bits)
    if values.is_floating_point() or values.is_complex():
        raise ValueError(f"pack takes an integer tensor; got {values.dtype}")
    flat = values.detach().cpu().reshape(-1).to(torch.int64).numpy()
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if flat.size and (flat.min() < low or flat.max() > high):
        raise ValueError(
            f"values outside the {bits}-bit range [{low}, {high}]: min {flat.min()}, max {flat.max()}"
        )
    fields = (flat & ((1 << bits) - 1)).astype(np.uint32)
    stream = ((fields[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    packed = np.packbits(stream.reshape(-1), bitorder="little")
    return torch.from_numpy(packed.copy())


def unpack(packed: Tensor, bits: int, count: int) -> Tensor:
    """The inverse of :func:`pack`: ``count`` signed values as int64.

    Raises:
        ValueError: if ``packed`` is not uint8 or holds fewer than ``count`` values.
    """
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed data must be uint8; got {packed.dtype}")
    if packed.numel() < packed_size(count, bits):
        raise ValueError(
            f"{packed.numel()} bytes hold fewer than {count} values of {bits} bits "
            f"({packed_size(count, bits)} bytes needed)"
        )
    stream = np.unpackbits(packed.cpu().numpy(), bitorder="little")[: count * bits]
    fields = (stream.reshape(count, bits).astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(
        axis=1
    )
    signed = np.where(fields >= 2 ** (bits - 1), fields - 2**bits, fields)
    return torch.from_numpy(signed.astype(np.int64))
