"""Bit assignments: a validated mapping from quantization point names to bits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mohaq.quant.points import Workload

MIN_BITS = 2
MAX_BITS = 16
# Precision of points that a search does not touch (biases, recurrent vectors).
FLOAT_BITS = 32


class BitAssignmentError(ValueError):
    """A bit assignment names an unknown point or a bit width out of range."""


@dataclass(frozen=True)
class BitAssignment:
    """Bits per quantization point; a point that is absent stays in float.

    Attributes:
        bits: point name -> integer bit width in [2, 16].
    """

    bits: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, width in self.bits.items():
            if isinstance(width, bool) or not isinstance(width, int):
                raise BitAssignmentError(
                    f"bits of point {name!r} must be an integer, got {width!r}"
                )
            if not MIN_BITS <= width <= MAX_BITS:
                raise BitAssignmentError(
                    f"bits of point {name!r} is {width}; allowed: {MIN_BITS} to {MAX_BITS}"
                )
        object.__setattr__(self, "bits", MappingProxyType(dict(self.bits)))

    @classmethod
    def uniform(cls, names: Iterable[str], bits: int) -> BitAssignment:
        return cls({name: bits for name in names})

    def validate_for(self, workload: Workload) -> None:
        """Raises BitAssignmentError if a name is not one of the workload's points."""
        valid = set(workload.names)
        unknown = sorted(set(self.bits) - valid)
        if unknown:
            raise BitAssignmentError(
                f"unknown quantization point(s) {unknown}; valid points: {', '.join(workload.names)}"
            )

    def get(self, name: str, default: int = FLOAT_BITS) -> int:
        return self.bits.get(name, default)

    def to_dict(self) -> dict[str, int]:
        return dict(self.bits)

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> BitAssignment:
        return cls({str(k): int(v) for k, v in data.items()})

    def __len__(self) -> int:
        return len(self.bits)
