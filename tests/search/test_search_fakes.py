"""Fakes shared by the search tests: a 4-layer workload and an analytic cost model.

Imported by the other test files (pytest puts this folder on sys.path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload


def fake_workload(layers: int = 4) -> Workload:
    points = []
    for i in range(layers):
        params = 1000 * (i + 1)
        points.append(QuantPoint(f"l{i}.input", "activation", f"l{i}"))
        points.append(
            QuantPoint(
                f"l{i}.weight",
                "weight",
                f"l{i}",
                params=params,
                macs_per_frame=params,
                in_features=10,
                out_features=100 * (i + 1),
                input_point=f"l{i}.input",
            )
        )
    return Workload(tuple(points), fixed_params=100, fixed_bits=16)


@dataclass
class Report:
    totals: dict[str, float]


@dataclass
class FakeCostModel:
    """speedup = MAC-weighted mean of 16 / max(w, a); memory_mb = weight bits x
    params / 8 / 2**20 scaled x 1000; energy = sum of MACs x w x a / 1000."""

    allowed_bits: tuple[int, ...] | None = (2, 4, 8, 16)
    shared_layer_precision: bool = False
    memory_capacity_bytes: int | None = None
    name: str = "fake"
    metric_names: tuple[str, ...] = ("speedup", "memory_mb", "energy")
    higher_is_better: dict[str, bool] = field(default_factory=lambda: {"speedup": True})

    def metrics(self, workload: Workload, assignment: BitAssignment) -> Report:
        macs = speed = memory = energy = 0.0
        for point in workload.matmul_weights():
            w = assignment.bits[point.name]
            a = assignment.bits[point.input_point]
            macs += point.macs_per_frame
            speed += point.macs_per_frame * 16 / max(w, a)
            memory += point.params * w
            energy += point.macs_per_frame * w * a / 1000
        memory_mb = 1000 * (memory + workload.fixed_params * workload.fixed_bits) / 8 / 2**20
        return Report({"speedup": speed / macs, "memory_mb": memory_mb, "energy": energy})

    def check(self, workload: Workload, assignment: BitAssignment) -> list[str]:
        problems = []
        if self.allowed_bits is not None:
            for name, bits in assignment.bits.items():
                if bits not in self.allowed_bits:
                    problems.append(f"{name}: {bits} bits not allowed")
        if self.shared_layer_precision:
            for point in workload.matmul_weights():
                if assignment.bits[point.name] != assignment.bits[point.input_point]:
                    problems.append(f"{point.layer}: weight and input precision differ")
        return problems


def test_fake_cost_model_is_monotone() -> None:
    workload = fake_workload()
    model = FakeCostModel()
    low = model.metrics(workload, BitAssignment.uniform(workload.names, 4)).totals
    high = model.metrics(workload, BitAssignment.uniform(workload.names, 16)).totals
    assert low["speedup"] == 4.0 and high["speedup"] == 1.0
    assert low["memory_mb"] < high["memory_mb"]
