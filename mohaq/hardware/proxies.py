"""Hardware-agnostic cost proxies: model size and bit operations (BOPs).

Both accept any precision, float included (a point absent from the assignment
counts as 32 bits), so they can price a float model as a reference.
"""

from __future__ import annotations

from mohaq.hardware.base import (
    CostModel,
    CostReport,
    memory_totals,
    product_row,
    products,
)
from mohaq.hardware.constants import GRID_CONSTANTS, check_constants, common_constants
from mohaq.hardware.registry import register_cost_model
from mohaq.quant.assignment import FLOAT_BITS, BitAssignment
from mohaq.quant.points import Workload


@register_cost_model("size")
class ModelSizeCostModel(CostModel):
    """Model size = sum of weight params x bits + fixed params x fixed bits.

    ``compression`` is the float32 size (weights at 32 bits, fixed params at
    the workload's fixed bits) over this size.

    Args:
        memory_capacity_bytes: a size budget reported by ``check`` (None: none).
        per_channel_weights, asymmetric_activations: the grids the platform
            supports (see :class:`~mohaq.hardware.base.CostModel`; default True).
    """

    metric_names = ("memory_mb", "memory_bytes", "compression")
    higher_is_better = {"compression": True}
    units = {"memory_mb": "MiB", "memory_bytes": "B"}
    metric_descriptions = {"compression": "float32 size / size"}
    constants = common_constants("memory_capacity_bytes", *GRID_CONSTANTS)

    def __init__(
        self,
        *,
        memory_capacity_bytes: int | None = None,
        per_channel_weights: bool = True,
        asymmetric_activations: bool = True,
    ) -> None:
        c = check_constants(self.constants, locals())
        super().__init__(
            allowed_bits=None,
            memory_capacity_bytes=c["memory_capacity_bytes"],
            baseline_bits=FLOAT_BITS,
            per_channel_weights=c["per_channel_weights"],
            asymmetric_activations=c["asymmetric_activations"],
        )

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        rows = [
            {
                "layer": point.layer,
                "weight": point.name,
                "w_bits": assignment.get(point.name),
                "params": point.params,
                "memory_bytes": point.params * assignment.get(point.name) / 8,
            }
            for point in workload.points
            if point.kind == "weight"
        ]
        totals = memory_totals(workload, assignment)
        float_size = memory_totals(workload, BitAssignment())["memory_bytes"]
        totals["compression"] = float_size / totals["memory_bytes"]
        notes = [
            f"fixed params: {workload.fixed_params:,} at {workload.fixed_bits} bits; "
            "compression over float32 weights"
        ]
        return self._report(totals, rows, notes)


@register_cost_model("bops")
class BopsCostModel(CostModel):
    """BOPs = sum over matrix products of MACs x weight bits x activation bits (per frame).

    ``bops_ratio`` is the BOPs of all points at ``baseline_bits`` over these.

    Args:
        baseline_bits: the uniform precision of ``bops_ratio`` 1 (default 8).
        memory_capacity_bytes: a size budget reported by ``check`` (None: none).
        per_channel_weights, asymmetric_activations: the grids the platform
            supports (see :class:`~mohaq.hardware.base.CostModel`; default True).
    """

    metric_names = ("bops", "bops_ratio", "memory_mb", "memory_bytes")
    higher_is_better = {"bops_ratio": True}
    units = {"bops": "bit-ops/frame", "memory_mb": "MiB", "memory_bytes": "B"}
    metric_descriptions = {"bops_ratio": "BOPs at the baseline precision / BOPs"}
    constants = common_constants("baseline_bits", "memory_capacity_bytes", *GRID_CONSTANTS)

    def __init__(
        self,
        *,
        baseline_bits: int = 8,
        memory_capacity_bytes: int | None = None,
        per_channel_weights: bool = True,
        asymmetric_activations: bool = True,
    ) -> None:
        c = check_constants(self.constants, locals())
        super().__init__(
            allowed_bits=None,
            memory_capacity_bytes=c["memory_capacity_bytes"],
            baseline_bits=c["baseline_bits"],
            per_channel_weights=c["per_channel_weights"],
            asymmetric_activations=c["asymmetric_activations"],
        )

    @staticmethod
    def _bops(workload: Workload, assignment: BitAssignment) -> float:
        return float(
            sum(p.macs * p.weight_bits * p.activation_bits for p in products(workload, assignment))
        )

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        rows = [
            {**product_row(p), "bops": p.macs * p.weight_bits * p.activation_bits}
            for p in products(workload, assignment)
        ]
        bops = self._bops(workload, assignment)
        baseline = self._bops(workload, self.baseline_assignment(workload))
        totals = {
            "bops": bops,
            "bops_ratio": baseline / bops if bops else float("inf"),
            **memory_totals(workload, assignment),
        }
        notes = [f"bops_ratio over all points at {self.baseline_bits}x{self.baseline_bits} bits"]
        return self._report(totals, rows, notes)
