"""The cost model interface: a workload plus a bit assignment -> named metrics.

A cost model prices the matrix products of a :class:`~mohaq.quant.points.Workload`
(each weight point that feeds a product, with the activation point that is the
product's other operand) at the precisions of a
:class:`~mohaq.quant.assignment.BitAssignment`, and declares the platform's
constraints so a search can stay inside them:

- ``allowed_bits``: the precisions the platform runs (None: any, float included).
- ``shared_layer_precision``: a layer's weights and input activation must share
  one precision (SiLago's datapath runs both operands in one mode).
- ``memory_capacity_bytes``: on-chip/off-chip weight memory (None: unbounded).

A point absent from an assignment is float (32 bits). On a platform with a
fixed set of bit widths, float is not allowed: :meth:`CostModel.check` reports it
and :meth:`CostModel.metrics` raises :class:`InfeasibleAssignmentError`. Memory
over capacity is only reported by ``check`` (the metrics are still defined).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mohaq.quant.assignment import FLOAT_BITS, BitAssignment
from mohaq.quant.points import QuantPoint, Workload

if TYPE_CHECKING:
    from mohaq.hardware.constants import Constant

MIB = 2**20


class CostModelError(ValueError):
    """A cost model was configured or asked something it cannot answer."""


class InfeasibleAssignmentError(CostModelError):
    """The platform cannot run the assignment (bits not allowed, float points,
    broken shared precision, missing lookup-table entries)."""


class ConstantError(CostModelError):
    """A platform constant has the wrong type, is out of range, or a table lacks
    an entry the platform needs.

    Attributes:
        key: the constant's name (``sram_pj_per_bit``).
        value: the value received.
        problem: what is wrong with it (``is negative``).
        allowed: what the constant accepts.
        source: where the value came from (a platform file, a cost model name);
            empty when unknown.
    """

    def __init__(self, key: str, value: Any, problem: str, allowed: str, source: str = "") -> None:
        self.key, self.value, self.problem, self.allowed, self.source = (
            key,
            value,
            problem,
            allowed,
            source,
        )
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return (
            f"{where}constant {self.key!r} = {self.value!r} {self.problem}; allowed: {self.allowed}"
        )

    def __str__(self) -> str:
        return self._message()

    def with_source(self, source: str, cls: type[ConstantError] | None = None) -> ConstantError:
        """The same error, said of ``source``, as ``cls`` (default: this error's class)."""
        kind = cls or type(self)
        error = kind.__new__(kind)
        error.__dict__.update(vars(self))
        error.source = source
        error.args = (error._message(),)
        return error


@dataclass(frozen=True)
class Product:
    """One matrix product of a workload at an assignment's precisions.

    Attributes:
        point: the weight point that feeds the product.
        weight_bits: the weight's precision (32: float).
        activation_bits: the precision of the input point (32: float).
    """

    point: QuantPoint
    weight_bits: int
    activation_bits: int

    @property
    def layer(self) -> str:
        return self.point.layer

    @property
    def macs(self) -> int:
        return self.point.macs_per_frame


def products(workload: Workload, assignment: BitAssignment) -> list[Product]:
    """The workload's matrix products, in model order, with their operand precisions.

    Raises:
        CostModelError: a weight feeding a product names no input point.
    """
    found = []
    for point in workload.matmul_weights():
        if point.input_point is None:
            raise CostModelError(
                f"weight point {point.name!r} feeds a matrix product but names no input point; "
                "cost models need the activation operand's precision"
            )
        found.append(Product(point, assignment.get(point.name), assignment.get(point.input_point)))
    return found


def weight_memory_bits(workload: Workload, assignment: BitAssignment) -> int:
    """MOHAQ's memory: weight bits x parameters over weight points, plus the
    fixed-precision extras (biases, recurrent vectors) at ``workload.fixed_bits``."""
    searched = sum(
        point.params * assignment.get(point.name)
        for point in workload.points
        if point.kind == "weight"
    )
    return searched + workload.fixed_params * workload.fixed_bits


def memory_totals(workload: Workload, assignment: BitAssignment) -> dict[str, float]:
    """``memory_mb`` and ``memory_bytes`` (MB = bytes / 2**20, as MOHAQ's code)."""
    size = weight_memory_bits(workload, assignment) / 8
    return {"memory_mb": size / MIB, "memory_bytes": float(size)}


def _total_macs(values: Sequence[tuple[int, float]]) -> int:
    total = sum(macs for macs, _ in values)
    if total == 0:
        raise CostModelError("the workload has no matrix products (zero MACs) to cost")
    return total


def mac_weighted_mean(values: Sequence[tuple[int, float]]) -> float:
    """Mean of ``value`` weighted by ``macs`` over ``(macs, value)`` pairs.

    Over per-layer speedups this is MOHAQ's ``speedup`` (``speedup_mohaq``
    here): it overstates the time saved whenever layers differ (half the MACs
    at 4x and half at 1x give 2.5, the hardware runs 1.6x faster).
    """
    return sum(macs * value for macs, value in values) / _total_macs(values)


def time_ratio_speedup(values: Sequence[tuple[int, float]]) -> float:
    """Physical speedup from per-layer speedups: time adds up over layers.

    With ``(macs, speedup)`` pairs, where a layer takes ``macs / speedup`` time
    units against ``macs`` at the baseline: ``sum(macs) / sum(macs / speedup)``,
    the baseline's total time over the assignment's.
    """
    total = _total_macs(values)
    return total / sum(macs / speed for macs, speed in values)


@dataclass
class CostReport:
    """What a cost model says about one assignment.

    Attributes:
        platform: the cost model's name.
        totals: metric -> value for the whole model (per input frame).
        rows: the per-layer table: one dict per matrix product, with at least
            ``layer``, ``weight``, ``input``, ``w_bits``, ``a_bits``, ``macs``,
            ``params`` and the model's own columns (cycles, latency, energy, ...).
        units: metric or column -> unit, for printing.
        notes: remarks printed under the table (baseline, assumptions).
    """

    platform: str
    totals: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def columns(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in seen:
                    seen.append(key)
        return seen

    def _header(self, column: str) -> str:
        unit = self.units.get(column)
        return f"{column} ({unit})" if unit else column

    def _table(self) -> tuple[list[str], list[list[str]]]:
        columns = self.columns()
        body = [[_format(row.get(c, "")) for c in columns] for row in self.rows]
        return [self._header(c) for c in columns], body

    def totals_lines(self) -> list[str]:
        return [f"{self._header(k)}: {_format(v)}" for k, v in self.totals.items()]

    def to_markdown(self) -> str:
        """A Markdown table per layer, then the totals and notes."""
        header, body = self._table()
        lines = [f"### {self.platform}", ""]
        if header:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines.extend("| " + " | ".join(cells) + " |" for cells in body)
            lines.append("")
        lines.extend(f"- {line}" for line in self.totals_lines())
        lines.extend(f"- note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_text(self) -> str:
        """A fixed-width text table per layer, then the totals and notes."""
        header, body = self._table()
        lines = [f"== {self.platform} =="]
        if header:
            widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
            lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
            lines.extend(
                "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body
            )
        lines.extend(f"  {line}" for line in self.totals_lines())
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (
        math.isfinite(value) and value == int(value) and abs(value) < 1e15
    ):
        return f"{int(value):,}"
    if abs(value) >= 1e12 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.4g}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


class CostModel(ABC):
    """Base of the hardware cost models.

    Subclasses set the class attributes, take their constants as keyword-only
    constructor arguments (those are the keys a platform YAML may override),
    declare each of them in ``constants`` (type, range, meaning; checked when
    the model is built) and implement :meth:`metrics`.

    Attributes:
        name: the registered name (a platform YAML may rename an instance).
        metric_names: the metrics :meth:`metrics` reports in ``totals``.
        higher_is_better: metric -> True where a search should maximize it.
        units: metric/column -> unit.
        metric_descriptions: metric -> what it measures, for reports and plots
            (which ``speedup`` a platform reports, for one).
        constants: constructor argument -> its
            :class:`~mohaq.hardware.constants.Constant` (type, range, meaning).
        allowed_bits: precisions the platform runs; None: any (float too).
        shared_layer_precision: weights and input activation share one precision.
        memory_capacity_bytes: weight memory available; None: unbounded.
        baseline_bits: the uniform precision that speedups are measured against.
        per_channel_weights: the platform supports one weight scale per output
            channel (checked by :meth:`mohaq.quant.ptq.PTQConfig.check_platform`).
        asymmetric_activations: the platform supports activation zero points.
    """

    name: str = "cost-model"
    metric_names: ClassVar[tuple[str, ...]] = ()
    higher_is_better: ClassVar[Mapping[str, bool]] = {}
    units: ClassVar[Mapping[str, str]] = {}
    metric_descriptions: ClassVar[Mapping[str, str]] = {}
    constants: ClassVar[Mapping[str, Constant]] = {}

    def __init__(
        self,
        *,
        allowed_bits: Sequence[int] | None,
        shared_layer_precision: bool = False,
        memory_capacity_bytes: int | None = None,
        baseline_bits: int = 16,
        per_channel_weights: bool = False,
        asymmetric_activations: bool = False,
    ) -> None:
        self.per_channel_weights = bool(per_channel_weights)
        self.asymmetric_activations = bool(asymmetric_activations)
        if allowed_bits is not None:
            allowed_bits = tuple(sorted({int(b) for b in allowed_bits}))
            if not allowed_bits:
                raise ConstantError(
                    "allowed_bits", [], "is empty", "a non-empty list of bit widths"
                )
        self.allowed_bits: tuple[int, ...] | None = allowed_bits
        self.shared_layer_precision = bool(shared_layer_precision)
        if memory_capacity_bytes is not None and memory_capacity_bytes <= 0:
            raise ConstantError(
                "memory_capacity_bytes",
                memory_capacity_bytes,
                "is not positive",
                "an integer > 0 (bytes), or null for unbounded",
            )
        self.memory_capacity_bytes = memory_capacity_bytes
        if allowed_bits is not None and baseline_bits not in allowed_bits:
            raise ConstantError(
                "baseline_bits",
                baseline_bits,
                "is not one of allowed_bits",
                f"one of allowed_bits {list(allowed_bits)}",
            )
        self.baseline_bits = int(baseline_bits)

    def describe(self, metric: str) -> str:
        """``metric`` with what it measures, e.g. for a plot's axis label.

        Raises:
            CostModelError: the model does not report ``metric``.
        """
        if metric not in self.metric_names:
            raise CostModelError(
                f"{self.name} reports no metric {metric!r}; metrics: {', '.join(self.metric_names)}"
            )
        description = self.metric_descriptions.get(metric)
        return f"{metric} ({description})" if description else metric

    # -- what subclasses implement ------------------------------------------------
    @abstractmethod
    def metrics(self, workload: Workload, assignment: BitAssignment) -> CostReport:
        """Prices the assignment.

        Raises:
            InfeasibleAssignmentError: the platform cannot run it (see :meth:`check`).
        """

    def extra_violations(self, workload: Workload, assignment: BitAssignment) -> list[str]:
        """Platform-specific reasons the assignment cannot run (lookup-table gaps)."""
        return []

    # -- constraints ----------------------------------------------------------------
    def run_violations(self, workload: Workload, assignment: BitAssignment) -> list[str]:
        """Why the platform cannot run the assignment at all (not memory capacity)."""
        problems: list[str] = []
        if self.allowed_bits is not None:
            for point in workload.points:
                bits = assignment.get(point.name)
                if bits not in self.allowed_bits:
                    shown = (
                        "float (32 bits, absent from the assignment)"
                        if bits == FLOAT_BITS
                        else f"{bits} bits"
                    )
                    problems.append(
                        f"{point.name}: {shown} not allowed on {self.name}; allowed: "
                        f"{list(self.allowed_bits)}"
                    )
        if self.shared_layer_precision:
            for product in products(workload, assignment):
                if product.weight_bits != product.activation_bits:
                    problems.append(
                        f"layer {product.layer}: weight {product.point.name} at "
                        f"{product.weight_bits} bits and input {product.point.input_point} at "
                        f"{product.activation_bits} bits must share one precision on {self.name}"
                    )
        problems.extend(self.extra_violations(workload, assignment))
        return problems

    def check(self, workload: Workload, assignment: BitAssignment) -> list[str]:
        """Human-readable violations of the platform's constraints (empty: feasible)."""
        problems = self.run_violations(workload, assignment)
        if self.memory_capacity_bytes is not None:
            size = weight_memory_bits(workload, assignment) / 8
            if size > self.memory_capacity_bytes:
                problems.append(
                    f"memory {size:,.0f} bytes ({size / MIB:.3f} MB) exceeds the capacity "
                    f"of {self.name}, {self.memory_capacity_bytes:,} bytes"
                )
        return problems

    def require_runnable(self, workload: Workload, assignment: BitAssignment) -> None:
        """Raises InfeasibleAssignmentError listing the run violations, if any."""
        problems = self.run_violations(workload, assignment)
        if problems:
            shown = "; ".join(problems[:8]) + (
                f"; ... ({len(problems)} in all)" if len(problems) > 8 else ""
            )
            raise InfeasibleAssignmentError(f"{self.name} cannot run this assignment: {shown}")

    def baseline_assignment(self, workload: Workload) -> BitAssignment:
        """Every point at ``baseline_bits``."""
        return BitAssignment.uniform(workload.names, self.baseline_bits)

    def _report(
        self,
        totals: dict[str, float],
        rows: list[dict[str, Any]],
        notes: Sequence[str] = (),
    ) -> CostReport:
        described = [
            f"{metric}: {self.metric_descriptions[metric]}"
            for metric in totals
            if metric in self.metric_descriptions
        ]
        return CostReport(self.name, totals, rows, dict(self.units), [*described, *notes])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def product_row(product: Product) -> dict[str, Any]:
    """The columns every per-layer table starts with."""
    return {
        "layer": product.layer,
        "weight": product.point.name,
        "input": product.point.input_point,
        "w_bits": product.weight_bits,
        "a_bits": product.activation_bits,
        "macs": product.macs,
        "params": product.point.params,
    }
