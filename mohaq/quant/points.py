"""Quantization points: the named places where a model quantizes a tensor.

The list of a model's points is both the search space of a precision search
and the workload that hardware cost models price, so each point carries what
both need: its kind, its layer, how many parameters it quantizes and, for a
weight that feeds a matrix product, that product's shape and MACs per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PointKind = Literal["weight", "activation", "state", "operator"]
POINT_KINDS: tuple[str, ...] = ("weight", "activation", "state", "operator")


@dataclass(frozen=True)
class QuantPoint:
    """One quantization point of a model.

    Attributes:
        name: unique name, e.g. ``"sru0.weight"`` or ``"gru1.ih_matmul"``.
        kind: ``"weight"`` (a parameter tensor), ``"activation"`` (an input to a
            matrix product), ``"state"`` (a recurrent state) or ``"operator"``
            (the output of an operator inside a cell).
        layer: the layer the point belongs to, e.g. ``"sru0"``, ``"output"``.
        params: parameters quantized at this point (0 for tensors computed at
            run time).
        macs_per_frame: multiply-accumulates per input frame of the matrix
            product that this weight feeds (0 for points that feed none).
        in_features: input size of that matrix product (0 if none).
        out_features: output size of that matrix product (0 if none).
        input_point: for a weight, the name of the activation point that is the
            other operand of its matrix product; None otherwise.
    """

    name: str
    kind: PointKind
    layer: str
    params: int = 0
    macs_per_frame: int = 0
    in_features: int = 0
    out_features: int = 0
    input_point: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in POINT_KINDS:
            raise ValueError(
                f"quantization point {self.name!r}: kind {self.kind!r} is not one of {POINT_KINDS}"
            )
        for field_name in ("params", "macs_per_frame", "in_features", "out_features"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"quantization point {self.name!r}: {field_name} must be >= 0")


@dataclass(frozen=True)
class Workload:
    """What a hardware cost model prices: a model's points plus its fixed-precision extras.

    Attributes:
        points: the model's quantization points, in model order.
        fixed_params: parameters that are never searched (biases, element-wise
            recurrent vectors); MOHAQ keeps them at 16-bit fixed point.
        fixed_bits: the precision of ``fixed_params``.
    """

    points: tuple[QuantPoint, ...]
    fixed_params: int = 0
    fixed_bits: int = 16

    def __post_init__(self) -> None:
        names = [point.name for point in self.points]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate quantization point names: {duplicates}")
        by_name = set(names)
        for point in self.points:
            if point.input_point is not None and point.input_point not in by_name:
                raise ValueError(
                    f"weight point {point.name!r} names input point {point.input_point!r}, "
                    f"which is not a point of this workload"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(point.name for point in self.points)

    def point(self, name: str) -> QuantPoint:
        for candidate in self.points:
            if candidate.name == name:
                return candidate
        raise KeyError(f"no quantization point {name!r}; points: {', '.join(self.names)}")

    def matmul_weights(self) -> tuple[QuantPoint, ...]:
        """The weight points that feed a matrix product (the compute workload)."""
        return tuple(p for p in self.points if p.kind == "weight" and p.macs_per_frame > 0)
