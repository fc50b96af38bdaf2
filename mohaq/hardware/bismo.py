"""BISMO, the bit-serial matrix multiplication overlay (Umuroglu et al.).

A Dm x Dk x Dn array of binary dot-product units computes an m x k by k x n
product one bit-plane pair at a time, so its execute cycles are
``ceil(m / Dm) x ceil(n / Dn) x ceil(k / Dk) x w_bits x a_bits``: linear in each
operand's precision (any width runs, unlike Bit Fusion's power-of-two steps).
Here m = output features, k = input features and n = ``batch`` frames; a
matrix-vector product (batch 1) uses 1/Dn of the array. Memory traffic is not
modelled (execute cycles only). ``speedup`` is the all-baseline model's cycles
over the assignment's: a physical time ratio.

At 1 x 1 bits the array does 2 x Dm x Dk x Dn binary operations per cycle:
6.55 TOPS for PYNQ-Z1 (8 x 256 x 8 at 200 MHz) and 15.4 TOPS for Ultra96
(10 x 256 x 10 at 300 MHz), the peaks BISMO's authors publish (6.5 and 15
binary TOPS, EECS-NTNU/bismo ``doc/platforms.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mohaq.hardware.base import (
    CostModel,
    CostModelError,
    CostReport,
    Product,
    memory_totals,
    product_row,
    products,
)
from mohaq.hardware.constants import GRID_CONSTANTS, Constant, check_constants, common_constants
from mohaq.hardware.registry import register_cost_model
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload


@register_cost_model("bismo")
class BismoCostModel(CostModel):
    """BISMO execute cycles; defaults: PYNQ-Z1 (8 x 256 x 8 at 200 MHz).

    Args:
        dm: rows of the array (output features per tile).
        dk: dot-product width (input features per tile).
        dn: columns of the array (frames per tile).
        frequency_hz: clock.
        batch: frames per product (n).
        allowed_bits: operand precisions (bit-serial: 1 to 16).
        shared_layer_precision: weights and input share one precision.
        memory_capacity_bytes: weight memory (None: unbounded).
        per_channel_weights, asymmetric_activations: the grids the platform
            supports (see :class:`~mohaq.hardware.base.CostModel`; default False).
        baseline_bits: uniform precision that ``speedup`` compares with (8x8, as HAQ).

    Raises:
        ConstantError: a constant of the wrong type or sign.
    """

    metric_names = ("speedup", "latency_cycles", "latency_s", "memory_mb", "memory_bytes")
    higher_is_better = {"speedup": True}
    units = {
        "latency_cycles": "cycles/frame",
        "latency_s": "s/frame",
        "memory_mb": "MiB",
        "memory_bytes": "B",
    }
    metric_descriptions = {"speedup": "physical: cycles at the baseline precision / cycles"}
    constants = {
        "dm": Constant("int", "array rows: output features per tile", minimum=0, strict=True),
        "dk": Constant("int", "dot-product width: input features per tile", minimum=0, strict=True),
        "dn": Constant("int", "array columns: frames per tile", minimum=0, strict=True),
        "frequency_hz": Constant("number", "clock, Hz", minimum=0, strict=True),
        "batch": Constant("int", "frames per product", minimum=0, strict=True),
        **common_constants(
            "allowed_bits",
            "shared_layer_precision",
            "memory_capacity_bytes",
            "baseline_bits",
            *GRID_CONSTANTS,
        ),
    }

    def __init__(
        self,
        *,
        dm: int = 8,
        dk: int = 256,
        dn: int = 8,
        frequency_hz: float = 200e6,
        batch: int = 1,
        allowed_bits: Sequence[int] = tuple(range(1, 17)),
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 8,
        per_channel_weights: bool = False,
        asymmetric_activations: bool = False,
    ) -> None:
        c = check_constants(self.constants, locals())
        self.dm, self.dk, self.dn = c["dm"], c["dk"], c["dn"]
        self.frequency_hz: float = c["frequency_hz"]
        self.batch: int = c["batch"]
        super().__init__(
            allowed_bits=c["allowed_bits"],
            shared_layer_precision=c["shared_layer_precision"],
            memory_capacity_bytes=c["memory_capacity_bytes"],
            baseline_bits=c["baseline_bits"],
            per_channel_weights=c["per_channel_weights"],
            asymmetric_activations=c["asymmetric_activations"],
        )

    def cycles(self, product: Product) -> int:
        """Execute cycles of ``product`` for one batch of frames."""
        m, k = product.point.out_features, product.point.in_features
        if m <= 0 or k <= 0:
            raise CostModelError(
                f"{self.name}: weight point {product.point.name!r} needs in_features and "
                "out_features to be costed"
            )
        tiles = math.ceil(m / self.dm) * math.ceil(self.batch / self.dn) * math.ceil(k / self.dk)
        return tiles * product.weight_bits * product.activation_bits

    def _cycles(self, workload: Workload, assignment: BitAssignment) -> float:
        return sum(self.cycles(p) for p in products(workload, assignment)) / self.batch

    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        self.require_runnable(workload, assignment)
        rows = []
        for product in products(workload, assignment):
            cycles = self.cycles(product) / self.batch
            rows.append(
                {
                    **product_row(product),
                    "cycles": cycles,
                    "latency_s": cycles / self.frequency_hz,
                    "memory_bytes": product.point.params * product.weight_bits / 8,
                }
            )
        cycles = self._cycles(workload, assignment)
        baseline = self._cycles(workload, self.baseline_assignment(workload))
        totals = {
            "speedup": baseline / cycles,
            "latency_cycles": cycles,
            "latency_s": cycles / self.frequency_hz,
            **memory_totals(workload, assignment),
        }
        notes = [
            f"{self.dm}x{self.dk}x{self.dn} array at {self.frequency_hz / 1e6:g} MHz, batch "
            f"{self.batch}; speedup over all points at {self.baseline_bits}x{self.baseline_bits} bits",
        ]
        return self._report(totals, rows, notes)
