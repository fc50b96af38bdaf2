"""Objectives and constraints of a precision search.

The objectives are ``"error"`` (measured by the evaluator) plus any metric of
the platform's cost model. nevergrad minimizes, so metrics where higher is
better (speedup) are negated into losses. Constraints bound the error or any
cost metric; the ones on cost metrics are "cheap" (they need only the bits)
and are checked before a candidate is evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mohaq.hardware.base import CostModel
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload

if TYPE_CHECKING:
    from mohaq.search.space import SearchSpace

ERROR = "error"
MEMORY_MB_ALIAS = "memory_mb"


class ObjectiveError(ValueError):
    """An objective or constraint the platform cannot provide, or one that no
    assignment can satisfy."""


def metric_totals(
    cost_model: CostModel, workload: Workload, assignment: BitAssignment
) -> dict[str, float]:
    """The cost model's totals as plain floats."""
    return {str(k): float(v) for k, v in cost_model.metrics(workload, assignment).totals.items()}


@dataclass(frozen=True)
class Objective:
    """One objective; ``maximize`` objectives are negated into losses."""

    name: str
    maximize: bool = False

    def loss(self, value: float) -> float:
        return -value if self.maximize else value

    def value(self, loss: float) -> float:
        return -loss if self.maximize else loss


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` (op ``"<="``) or ``metric >= bound`` (op ``">="``).

    ``scale`` converts the user's unit to the metric's (MB -> bytes); ``label``
    is how the user wrote it, for messages.
    """

    metric: str
    op: str
    bound: float
    label: str

    @property
    def cheap(self) -> bool:
        """True if checkable from the bits alone, before evaluation."""
        return self.metric != ERROR

    def satisfied(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bound (0 when satisfied)."""
        excess = value - self.bound if self.op == "<=" else self.bound - value
        return max(0.0, excess)

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


_KEY_PATTERNS = (
    re.compile(r"^(?P<side>max|min)_(?P<metric>.+)$"),
    re.compile(r"^(?P<metric>.+?)\s*(?P<op><=|>=)\s*$"),
)


def parse_constraints(
    constraints: Mapping[str, float] | None, metric_names: Iterable[str]
) -> tuple[Constraint, ...]:
    """Constraints from ``{"max_error": 0.24, "max_memory_mb": 6, "speedup>=": 4}``.

    Keys are ``max_<name>`` / ``min_<name>`` or ``"<name><="`` / ``"<name>>="``
    where name is ``error`` or a platform metric. ``max_memory_mb`` bounds the
    platform's ``memory_mb`` metric, or ``memory_bytes`` scaled by 2**20.

    Raises:
        ObjectiveError: for an unknown key or metric (the message lists the valid
            ones) or a non-finite bound.
    """
    metrics = list(metric_names)
    valid = [ERROR, *metrics]
    parsed: list[Constraint] = []
    for key, raw in (constraints or {}).items():
        match = None
        for pattern in _KEY_PATTERNS:
            match = pattern.match(str(key).strip())
            if match:
                break
        if match is None:
            raise ObjectiveError(
                f"constraint {key!r} is not understood; write max_<metric>, min_<metric>, "
                f"'<metric><=' or '<metric>>=' with metric one of {valid}"
            )
        groups = match.groupdict()
        op = groups.get("op") or ("<=" if groups.get("side") == "max" else ">=")
        metric = groups["metric"].strip()
        try:
            bound = float(raw)
        except (TypeError, ValueError) as exc:
            raise ObjectiveError(
                f"constraint {key!r}: bound must be a number, got {raw!r}"
            ) from exc
        if not math.isfinite(bound):
            raise ObjectiveError(f"constraint {key!r}: bound must be finite, got {raw!r}")
        if metric == MEMORY_MB_ALIAS and metric not in metrics and "memory_bytes" in metrics:
            metric, bound = "memory_bytes", bound * 2**20
        if metric not in valid:
            raise ObjectiveError(
                f"constraint {key!r} bounds {metric!r}, which the platform does not provide; "
                f"valid: {valid}"
            )
        if metric == ERROR and op == "<=" and not 0 < bound <= 1:
            raise ObjectiveError(
                f"constraint {key!r}: the error is a fraction (0.24 for 24%), got {raw!r}"
            )
        parsed.append(Constraint(metric, op, bound, str(key)))
    return tuple(parsed)


class ObjectiveSet:
    """The objectives of a search, validated against a platform.

    Args:
        names: objective names; ``"error"`` plus metrics of the platform.
        metric_names: the platform's metrics.
        cost_model: the platform (for ``higher_is_better``).

    Raises:
        ObjectiveError: for an unknown, repeated or missing objective.
    """

    def __init__(self, names: Sequence[str], cost_model: CostModel) -> None:
        names = [str(n) for n in names]
        metric_names = list(cost_model.metric_names)
        valid = [ERROR, *metric_names]
        if len(names) < 2:
            raise ObjectiveError(
                f"a multi-objective search needs >= 2 objectives, got {names}; valid: {valid}"
            )
        if len(set(names)) != len(names):
            raise ObjectiveError(f"objectives repeat a name: {names}")
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ObjectiveError(
                f"objective(s) {unknown} not provided by the platform; valid: {valid}"
            )
        if ERROR not in names:
            raise ObjectiveError(f"objectives must include {ERROR!r}; got {names}")
        self.objectives = tuple(
            Objective(n, n != ERROR and bool(cost_model.higher_is_better.get(n, False)))
            for n in names
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    def __len__(self) -> int:
        return len(self.objectives)

    def values(self, error: float, metrics: Mapping[str, float]) -> dict[str, float]:
        return {
            o.name: (error if o.name == ERROR else float(metrics[o.name])) for o in self.objectives
        }

    def losses(self, values: Mapping[str, float]) -> list[float]:
        return [o.loss(float(values[o.name])) for o in self.objectives]


def best_achievable(
    space: SearchSpace, cost_model: CostModel, metric: str, *, minimize: bool
) -> float:
    """The best value of a cost metric over the space: the best uniform
    assignment, improved gene by gene (coordinate descent from each uniform
    start) because some platforms are not monotone in the bits (analytic Bit
    Fusion prices a 2-bit input above an 8-bit one where it stalls on memory)."""
    sign = 1.0 if minimize else -1.0
    workload = space.workload

    def value(genes: list[int]) -> float:
        return sign * metric_totals(cost_model, workload, space.decode(genes))[metric]

    best = float("inf")
    for start in range(len(space.choices)):
        genes = [start] * space.num_genes
        current = value(genes)
        improved = True
        while improved:
            improved = False
            for gene in range(space.num_genes):
                for choice in range(len(space.choices)):
                    if choice == genes[gene]:
                        continue
                    trial = list(genes)
                    trial[gene] = choice
                    candidate = value(trial)
                    if candidate < current - 1e-12:
                        genes, current, improved = trial, candidate, True
        best = min(best, current)
    return sign * best


def check_achievable(
    space: SearchSpace, cost_model: CostModel, constraints: Sequence[Constraint]
) -> None:
    """Raises before any evaluation if the platform or a cheap constraint cannot be met.

    A bound must hold for the best value of its metric over the space
    (:func:`best_achievable`, checked only when no uniform assignment meets it).

    Raises:
        ObjectiveError: naming the constraint and the best achievable value.
    """
    workload = space.workload
    lowest = space.uniform(min(space.choices))
    platform = cost_model.check(workload, lowest)
    if platform:
        raise ObjectiveError(
            f"no assignment fits {cost_model.name}: even {min(space.choices)} bits everywhere "
            f"breaks it ({'; '.join(platform[:3])})"
        )
    cheap = [c for c in constraints if c.cheap]
    if not cheap:
        return
    per_choice = {b: metric_totals(cost_model, workload, space.uniform(b)) for b in space.choices}
    for constraint in cheap:
        if any(constraint.satisfied(m[constraint.metric]) for m in per_choice.values()):
            continue
        best = best_achievable(space, cost_model, constraint.metric, minimize=constraint.op == "<=")
        if not constraint.satisfied(best):
            raise ObjectiveError(
                f"constraint {constraint.label} ({constraint.describe()}) cannot be met: the best "
                f"achievable {constraint.metric} with bits {list(space.choices)} is {best:g}"
            )


def reference_point(
    objectives: ObjectiveSet,
    space: SearchSpace,
    cost_model: CostModel,
    constraints: Sequence[Constraint],
    *,
    margin: float = 0.05,
) -> list[float]:
    """A fixed upper bound per loss, for nevergrad's MultiobjectiveReference and
    for hypervolumes: the error bound (or 1.0), and for each metric the worst
    uniform assignment's loss (or the constraint bound), widened by ``margin``
    of the metric's range so boundary points still count."""
    workload = space.workload
    uniform = [metric_totals(cost_model, workload, space.uniform(b)) for b in space.choices]
    bounds: list[float] = []
    for objective in objectives.objectives:
        if objective.name == ERROR:
            limit = next((c.bound for c in constraints if c.metric == ERROR and c.op == "<="), 1.0)
            bounds.append(float(limit))
            continue
        losses = [objective.loss(m[objective.name]) for m in uniform]
        worst, best = max(losses), min(losses)
        for c in constraints:
            if c.metric == objective.name and c.op == ("<=" if not objective.maximize else ">="):
                worst = min(worst, objective.loss(c.bound))
        span = max(worst - best, abs(worst), 1e-12)
        bounds.append(float(worst + margin * span))
    return bounds
