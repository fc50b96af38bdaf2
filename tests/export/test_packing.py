"""Sub-byte packing: hand-computed bytes and round trips at every width."""

from __future__ import annotations

import pytest
import torch

from mohaq.export.packing import pack, packed_size, unpack


def test_packed_bytes_by_hand() -> None:
    # 4 bits: low nibble first. 1 -> 0x1, -1 -> 0xF, 7 -> 0x7, -8 -> 0x8.
    assert pack(torch.tensor([1, -1, 7, -8]), 4).tolist() == [0xF1, 0x87]
    # 2 bits: fields 1, 3, 2, 0 | 1 -> 0b00_10_11_01, then 0b01.
    assert pack(torch.tensor([1, -1, -2, 0, 1]), 2).tolist() == [0x2D, 0x01]
    assert pack(torch.tensor([-1, 5]), 8).tolist() == [0xFF, 0x05]
    assert pack(torch.tensor([-2, 258]), 16).tolist() == [0xFE, 0xFF, 0x02, 0x01]
    # 3 bits: 011, 100, 001 -> stream 1,1,0, 0,0,1, 1,0,0 -> 0b01100011, 0b0.
    assert pack(torch.tensor([3, -4, 1]), 3).tolist() == [0x63, 0x00]


@pytest.mark.parametrize("bits", range(2, 17))
def test_round_trip_at_every_width(bits: int) -> None:
    generator = torch.Generator().manual_seed(bits)
    values = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), (37,), generator=generator)
    packed = pack(values, bits)
    assert (
        packed.dtype == torch.uint8
        and packed.numel() == packed_size(37, bits) == (37 * bits + 7) // 8
    )
    assert torch.equal(unpack(packed, bits, 37), values)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="4-bit range"):
        pack(torch.tensor([8]), 4)
    with pytest.raises(ValueError, match="integer tensor"):
        pack(torch.tensor([0.5]), 8)
    with pytest.raises(ValueError, match="from 2 to 16"):
        pack(torch.tensor([0]), 1)
    with pytest.raises(ValueError, match="fewer than"):
        unpack(torch.zeros(1, dtype=torch.uint8), 4, 3)
