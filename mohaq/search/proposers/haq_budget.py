"""HAQ's hardware budget: what it is, whether it can be met, and how a policy
is brought under it.

A budget bounds one cost metric of the platform from above (latency, energy,
model size: a metric where lower is better), either as an absolute value or
as a fraction of the value of a uniform precision (HAQ's "50% of the 8-bit
latency").

Enforcement follows HAQ: after the agent's episode, while the assignment
exceeds the budget, precisions are lowered one step at a time; the step taken
is the one that saves the most cost per unit of error it is expected to add
(:class:`~mohaq.search.proposers.haq_sensitivity.AdditiveErrorModel`).

Not every platform's cost falls when a precision does: the analytic Bit
Fusion model prices a recurrent layer with a narrow input (the quickstart's
first SRU layer: 23 inputs, 1,024 outputs) at 3,073 cycles with 2-bit inputs
and 1,058 with 8-bit inputs, both at 2-bit weights. When no single lowering step saves anything and the assignment still
exceeds the budget, the enforcer also considers changing one gene to any
choice, then a weight together with its input activation, still by saving per
unit of expected error; if even that finds nothing it falls back to the
cheapest assignment known, which fits (the budget is refused up front
otherwise). Every assignment the enforcer returns fits its budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from mohaq.search.problem import SearchProblem
from mohaq.search.proposers.base import Genes
from mohaq.search.proposers.haq_sensitivity import AdditiveErrorModel
from mohaq.search.proposers.registry import AlgorithmError


class BudgetError(AlgorithmError):
    """A budget the platform does not report, or one no assignment can meet."""


@dataclass(frozen=True)
class Budget:
    """``metric <= bound``.

    Attributes:
        metric: a platform metric where lower is better.
        bound: the largest allowed value.
        fraction: the bound as a fraction of ``baseline_value`` (None: absolute).
        baseline_bits: the uniform precision the fraction refers to.
        baseline_value: the metric at that uniform precision.
    """

    metric: str
    bound: float
    fraction: float | None = None
    baseline_bits: int | None = None
    baseline_value: float | None = None

    def fits(self, value: float) -> bool:
        return value <= self.bound

    def describe(self) -> str:
        if self.fraction is None:
            return f"{self.metric} <= {self.bound:g}"
        return (
            f"{self.metric} <= {self.bound:g} ({100 * self.fraction:g}% of uniform-"
            f"{self.baseline_bits}'s {self.baseline_value:g})"
        )


def lower_is_better_metrics(problem: SearchProblem) -> list[str]:
    cost_model = problem.cost_model
    return [m for m in cost_model.metric_names if not cost_model.higher_is_better.get(m, False)]


def check_budget_metric(problem: SearchProblem, metric: str) -> None:
    """Raises BudgetError unless ``metric`` is a lower-is-better platform metric."""
    allowed = lower_is_better_metrics(problem)
    if metric not in allowed:
        name = problem.cost_model.name
        if metric in problem.cost_model.metric_names:
            raise BudgetError(
                f"budget_metric {metric!r}: higher is better on {name}, a budget bounds a cost "
                f"from above; budget metrics of {name}: {allowed}"
            )
        raise BudgetError(
            f"budget_metric {metric!r} is not a metric of {name}; budget metrics of {name}: {allowed}"
        )


def _gene_index(problem: SearchProblem) -> dict[str, int]:
    return {point: g for g, gene in enumerate(problem.space.genes) for point in gene.points}


def operand_pairs(problem: SearchProblem) -> list[tuple[int, int]]:
    """``(weight gene, input gene)`` of each matrix product whose operands are
    different genes: the moves that change both operands of a product at once."""
    gene_of = _gene_index(problem)
    pairs: list[tuple[int, int]] = []
    for point in problem.workload.matmul_weights():
        if point.input_point is None:
            continue
        pair = (gene_of[point.name], gene_of[point.input_point])
        if pair[0] != pair[1] and pair not in pairs:
            pairs.append(pair)
    return pairs


def cheapest_assignment(problem: SearchProblem, metric: str) -> tuple[Genes, float]:
    """The lowest-``metric`` gene vector found, and its value: the best uniform
    vector improved by sweeps setting each gene, then each weight/input pair,
    to its best choices until a sweep improves nothing. Exact when the metric
    adds up over matrix products whose cost depends only on their operands."""
    space = problem.space
    choices = range(len(space.choices))

    def value(genes: Genes) -> float:
        return problem.metrics(genes)[metric]

    current = min(((k,) * space.num_genes for k in choices), key=value)
    best = value(current)
    pairs = operand_pairs(problem)
    improved = True
    while improved:
        improved = False
        for gene in range(space.num_genes):
            for k in choices:
                trial = current[:gene] + (k,) + current[gene + 1 :]
                if value(trial) < best:
                    current, best, improved = trial, value(trial), True
        for first, second in pairs:
            for a, b in itertools.product(choices, choices):
                trial = list(current)
                trial[first], trial[second] = a, b
                candidate = tuple(trial)
                if value(candidate) < best:
                    current, best, improved = candidate, value(candidate), True
    return current, best


def resolve_budgets(
    problem: SearchProblem,
    *,
    metric: str,
    fractions: Sequence[float] = (),
    value: float | None = None,
    baseline_bits: int = 8,
    cheapest: float,
) -> list[Budget]:
    """Budgets from fractions of uniform ``baseline_bits``'s metric, or one
    absolute ``value``.

    Raises:
        BudgetError: a metric the platform lacks or where higher is better (lists
            the budget metrics), baseline bits that are not a bit choice, or a
            budget below ``cheapest`` (names the smallest achievable value).
    """
    check_budget_metric(problem, metric)
    budgets: list[Budget] = []
    if value is not None:
        budgets.append(Budget(metric, float(value)))
    if fractions:
        if baseline_bits not in problem.space.choices:
            raise BudgetError(
                f"baseline_bits {baseline_bits} is not one of the bit choices "
                f"{list(problem.space.choices)}; a fractional budget refers to a uniform "
                "assignment the search evaluates as a baseline"
            )
        genes = problem.space.encode(problem.space.uniform(baseline_bits))
        reference = problem.metrics(genes)[metric]
        budgets += [
            Budget(metric, float(f) * reference, float(f), baseline_bits, reference)
            for f in fractions
        ]
    for budget in budgets:
        if not budget.fits(cheapest):
            share = (
                ""
                if budget.baseline_value is None
                else f" ({100 * cheapest / budget.baseline_value:.1f}% of uniform-{budget.baseline_bits})"
            )
            raise BudgetError(
                f"budget {budget.describe()} cannot be met on {problem.cost_model.name} with bits "
                f"{list(problem.space.choices)}: the smallest achievable {metric} is "
                f"{cheapest:g}{share}"
            )
    return budgets


class BudgetEnforcer:
    """Brings gene vectors under one budget (see the module docstring).

    Args:
        problem: the search problem (prices gene vectors, cached).
        budget: the budget to meet.
        model: the error model whose step costs order the steps.
        fallback: a vector that fits the budget (the cheapest one).
    """

    def __init__(
        self, problem: SearchProblem, budget: Budget, model: AdditiveErrorModel, fallback: Genes
    ) -> None:
        self.problem = problem
        self.budget = budget
        self.model = model
        self.fallback = tuple(fallback)
        self.pairs = operand_pairs(problem)
        # Enforcement is deterministic for one fit of the error model, and a
        # converging agent proposes the same policy again and again.
        self._enforced: dict[Genes, Genes] = {}
        self._version = -1
        if not self.fits(self.fallback):
            raise BudgetError(f"the fallback assignment does not fit {budget.describe()}")

    def value(self, genes: Genes) -> float:
        return self.problem.metrics(genes)[self.budget.metric]

    def fits(self, genes: Genes) -> bool:
        return self.budget.fits(self.value(genes))

    def _lowering_moves(self, genes: Genes) -> list[tuple[Genes, float]]:
        return [
            (genes[:g] + (k - 1,) + genes[g + 1 :], self.model.step_cost(genes, g, k - 1))
            for g, k in enumerate(genes)
            if k > 0
        ]

    def _single_moves(self, genes: Genes) -> list[tuple[Genes, float]]:
        return [
            (genes[:g] + (k,) + genes[g + 1 :], self.model.step_cost(genes, g, k))
            for g in range(len(genes))
            for k in range(len(self.problem.space.choices))
            if k != genes[g]
        ]

    def _pair_moves(self, genes: Genes) -> list[tuple[Genes, float]]:
        moves = []
        choices = range(len(self.problem.space.choices))
        for first, second in self.pairs:
            for a, b in itertools.product(choices, choices):
                if (a, b) == (genes[first], genes[second]):
                    continue
                trial = list(genes)
                trial[first] = a
                step = tuple(trial)
                trial[second] = b
                cost = self.model.step_cost(genes, first, a) + self.model.step_cost(step, second, b)
                moves.append((tuple(trial), cost))
        return moves

    def _best(self, value: float, moves: list[tuple[Genes, float]]) -> Genes | None:
        """The move saving the most per unit of expected error (ties: the first)."""
        best: Genes | None = None
        best_score = 0.0
        for genes, cost in moves:
            saving = value - self.value(genes)
            if saving > 0 and saving / cost > best_score:
                best, best_score = genes, saving / cost
        return best

    def enforce(self, genes: Genes) -> Genes:
        """``genes`` lowered until it fits the budget (unchanged if it fits)."""
        if self._version != self.model.version:
            self._enforced, self._version = {}, self.model.version
        key = tuple(genes)
        if key not in self._enforced:
            self._enforced[key] = self._enforce(key)
        return self._enforced[key]

    def _enforce(self, genes: Genes) -> Genes:
        current = tuple(genes)
        value = self.value(current)
        while not self.budget.fits(value):
            step = self._best(value, self._lowering_moves(current))
            if step is None:  # a platform whose cost does not fall with every precision
                step = self._best(value, self._single_moves(current))
            if step is None:
                step = self._best(value, self._pair_moves(current))
            if step is None:
                return self.fallback
            current, value = step, self.value(step)
        return current
