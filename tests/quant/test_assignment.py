from __future__ import annotations

import pytest

from mohaq.quant.assignment import BitAssignment, BitAssignmentError
from mohaq.quant.points import QuantPoint, Workload


def _workload() -> Workload:
    return Workload(
        points=(
            QuantPoint("l0.input", "activation", "l0"),
            QuantPoint("l0.weight", "weight", "l0", params=6, macs_per_frame=6,
                       in_features=2, out_features=3, input_point="l0.input"),
        ),
        fixed_params=3,
    )  # fmt: skip


def test_bits_out_of_range_name_the_point_and_the_range() -> None:
    with pytest.raises(BitAssignmentError, match=r"l0\.weight.*17.*2 to 16"):
        BitAssignment({"l0.weight": 17})
    with pytest.raises(BitAssignmentError, match="integer"):
        BitAssignment({"l0.weight": 4.0})  # type: ignore[dict-item]


def test_unknown_point_lists_the_valid_ones() -> None:
    with pytest.raises(BitAssignmentError, match=r"nope.*valid points: l0\.input, l0\.weight"):
        BitAssignment({"nope": 8}).validate_for(_workload())


def test_uniform_round_trip_and_immutability() -> None:
    assignment = BitAssignment.uniform(_workload().names, 4)
    assert assignment.to_dict() == {"l0.input": 4, "l0.weight": 4}
    assert BitAssignment.from_dict(assignment.to_dict()) == assignment
    assert assignment.get("absent") == 32
    with pytest.raises(TypeError):
        assignment.bits["l0.input"] = 8  # type: ignore[index]


def test_workload_rejects_duplicates_and_dangling_inputs() -> None:
    point = QuantPoint("a", "activation", "l0")
    with pytest.raises(ValueError, match="duplicate"):
        Workload(points=(point, point))
    with pytest.raises(ValueError, match="missing"):
        Workload(points=(QuantPoint("w", "weight", "l0", input_point="missing"),))
    assert [p.name for p in _workload().matmul_weights()] == ["l0.weight"]
