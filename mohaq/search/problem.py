"""The search problem: what is searched and how a candidate is judged,
independent of the algorithm that proposes candidates.

:class:`SearchProblem` binds a workload, a cost model (used through
:class:`~mohaq.hardware.base.CostModel`'s API only), objectives, constraints
and bit choices. It prices gene vectors (cached: cost metrics are exact and
cheap, and each vector is priced once), tells whether the cheap constraints
(platform violations, bounds on cost metrics) hold, repairs vectors that
break them, and turns an evaluator's result into an
:class:`~mohaq.search.records.EvaluationRecord` and the algorithm's
:class:`~mohaq.search.proposers.base.Outcome`.

Repair: cost metrics mostly improve as precisions go down, so an infeasible
vector is lowered one precision step at a time, each step on the gene whose
step down reduces the relative constraint excess the most. That estimate
comes from single-gene steps measured once per search from the all-highest
assignment; every step is checked against the real cost model. Where the
estimate sees no gain (a platform that is not monotone in the bits), the
one-step move, down or up, that most reduces the real excess is taken. A repair costs
a few cost-model calls instead of the thousands of rejected draws that
rejection sampling spends when most of the space is infeasible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mohaq.hardware.base import CostModel, weight_memory_bits
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload
from mohaq.search.evaluators import EvaluationResult
from mohaq.search.objectives import (
    ERROR,
    Constraint,
    ObjectiveSet,
    check_achievable,
    metric_totals,
    parse_constraints,
    reference_point,
)
from mohaq.search.proposers.base import Genes, Outcome, as_genes
from mohaq.search.records import EvaluationRecord
from mohaq.search.space import SearchSpace

BASELINE_BITS: tuple[int, ...] = (16, 8, 4, 2)


class SearchProblem:
    """Genes, objectives, constraints and the cost model of one search.

    Args:
        workload: the model's quantization points.
        cost_model: the platform.
        objectives: ``"error"`` plus metrics of the platform.
        constraints: ``parse_constraints`` syntax.
        bit_choices: precisions to search (None: 2/4/8/16 the platform allows).

    Raises:
        ObjectiveError: unknown or impossible objectives and constraints
            (names the best achievable value).
        SearchSpaceError: bit choices the platform cannot run.
    """

    def __init__(
        self,
        *,
        workload: Workload,
        cost_model: CostModel,
        objectives: Sequence[str],
        constraints: Mapping[str, float] | None = None,
        bit_choices: Sequence[int] | None = None,
    ) -> None:
        self.workload = workload
        self.cost_model = cost_model
        self.objectives = ObjectiveSet(objectives, cost_model)
        self.constraints: tuple[Constraint, ...] = parse_constraints(
            constraints, cost_model.metric_names
        )
        self.cheap_constraints = tuple(c for c in self.constraints if c.cheap)
        self.space = SearchSpace(
            workload,
            bit_choices,
            allowed_bits=cost_model.allowed_bits,
            shared_layer_precision=cost_model.shared_layer_precision,
        )
        check_achievable(self.space, cost_model, self.constraints)
        self.reference: tuple[float, ...] = tuple(
            reference_point(self.objectives, self.space, cost_model, self.constraints)
        )
        self.baseline_bits = tuple(b for b in BASELINE_BITS if b in self.space.choices)
        self._cost_indices = [
            i for i, o in enumerate(self.objectives.objectives) if o.name != ERROR
        ]
        self._metrics: dict[Genes, dict[str, float]] = {}
        self._platform: dict[Genes, list[str]] = {}
        self._step_effects: np.ndarray | None = None

    # -- pricing ----------------------------------------------------------------------------
    def assignment(self, genes: Genes) -> BitAssignment:
        return self.space.decode(genes)

    def metrics(self, genes: Genes) -> dict[str, float]:
        """Every cost metric of ``genes`` (cached)."""
        found = self._metrics.get(genes)
        if found is None:
            found = metric_totals(self.cost_model, self.workload, self.assignment(genes))
            self._metrics[genes] = found
        return found

    def platform_violations(self, genes: Genes) -> list[str]:
        """What the platform itself refuses (memory capacity, ...; cached)."""
        found = self._platform.get(genes)
        if found is None:
            found = [str(v) for v in self.cost_model.check(self.workload, self.assignment(genes))]
            self._platform[genes] = found
        return found

    def cheap_violations(self, genes: Genes) -> list[str]:
        """Platform violations and broken bounds on cost metrics, readable."""
        found = list(self.platform_violations(genes))
        if self.cheap_constraints:
            metrics = self.metrics(genes)
            for c in self.cheap_constraints:
                value = metrics[c.metric]
                if not c.satisfied(value):
                    found.append(f"{c.label}: {c.metric} = {value:g}, bound {c.bound:g}")
        return found

    def is_feasible(self, genes: Genes) -> bool:
        """Whether the cheap constraints hold (the error is not known yet)."""
        if self.platform_violations(genes):
            return False
        if not self.cheap_constraints:
            return True
        metrics = self.metrics(genes)
        return all(c.satisfied(metrics[c.metric]) for c in self.cheap_constraints)

    def error_bound(self) -> float | None:
        """The tightest ``error <=`` constraint, or None."""
        bounds = [c.bound for c in self.constraints if c.metric == ERROR and c.op == "<="]
        return min(bounds) if bounds else None

    def cost_losses(self, genes: Genes) -> tuple[float, ...]:
        """The losses of the cost objectives (the error's slot left out), exact."""
        metrics = self.metrics(genes)
        objectives = self.objectives.objectives
        return tuple(objectives[i].loss(metrics[objectives[i].name]) for i in self._cost_indices)

    # -- repair -----------------------------------------------------------------------------
    def _stored_bytes(self, genes: Genes) -> float:
        return weight_memory_bits(self.workload, self.assignment(genes)) / 8

    def _excess(self, genes: Genes) -> float:
        """Relative excess over the cheap bounds and the platform's memory
        capacity, plus 1 per other platform violation."""
        capacity = self.cost_model.memory_capacity_bytes
        amount = float(len(self.cost_model.run_violations(self.workload, self.assignment(genes))))
        if capacity is not None:
            amount += max(0.0, self._stored_bytes(genes) - capacity) / capacity
        if self.cheap_constraints:
            metrics = self.metrics(genes)
            for c in self.cheap_constraints:
                amount += c.violation(metrics[c.metric]) / max(abs(c.bound), 1e-12)
        return amount

    def _effects(self) -> np.ndarray:
        """Excess-relevant values of single-gene settings from the all-highest
        vector: ``[gene, choice, each cheap constraint's metric, then stored bytes]``."""
        if self._step_effects is None:
            top = len(self.space.choices) - 1
            columns = len(self.cheap_constraints) + 1  # the last: stored bytes
            effects = np.zeros((self.space.num_genes, top + 1, columns))
            for g in range(self.space.num_genes):
                for k in range(top + 1):
                    genes = [top] * self.space.num_genes
                    genes[g] = k
                    vector = tuple(genes)
                    metrics = self.metrics(vector) if self.cheap_constraints else {}
                    effects[g, k, :-1] = [metrics[c.metric] for c in self.cheap_constraints]
                    effects[g, k, -1] = self._stored_bytes(vector)
            self._step_effects = effects
        return self._step_effects

    def _step_gain(self, genes: Genes, gene: int) -> float:
        """Estimated reduction of the relative excess from lowering ``gene`` one step."""
        effects = self._effects()
        before, after = effects[gene, genes[gene]], effects[gene, genes[gene] - 1]
        gain = 0.0
        for column, c in enumerate(self.cheap_constraints):
            change = before[column] - after[column]
            gain += (change if c.op == "<=" else -change) / max(abs(c.bound), 1e-12)
        if self.cost_model.memory_capacity_bytes is not None:
            gain += (before[-1] - after[-1]) / self.cost_model.memory_capacity_bytes
        return gain

    def repair(self, genes: Genes) -> Genes | None:
        """A feasible vector reached by lowering precisions (see the module
        docstring), or None when lowering cannot make ``genes`` feasible."""
        current = list(genes)
        while not self.is_feasible(tuple(current)):
            lowerable = [g for g, k in enumerate(current) if k > 0]
            if not lowerable:
                return None
            best = max(lowerable, key=lambda g: (self._step_gain(tuple(current), g), -g))
            if self._step_gain(tuple(current), best) > 0:
                current[best] -= 1
                continue
            # The estimate sees no gain (a platform that is not monotone in the bits,
            # or a platform-only violation): take the one-step move, down or up,
            # that reduces the real excess most.
            base = self._excess(tuple(current))
            moves = []
            for g in range(len(current)):
                for step in (-1, 1):
                    if 0 <= current[g] + step <= len(self.space.choices) - 1:
                        trial = list(current)
                        trial[g] += step
                        moves.append((base - self._excess(tuple(trial)), step, -g, trial))
            if not moves:
                return None
            gain, _, _, trial = max(moves, key=lambda m: m[:3])
            if gain <= 0:
                return None
            current = trial
        return tuple(current)

    # -- judging ----------------------------------------------------------------------------
    def violation_amount(self, genes: Genes, error: float | None) -> float:
        """0 when feasible, else the relative excess over every bound (error
        included when known) plus 1 per platform violation."""
        amount = self._excess(genes)
        if error is not None:
            for c in self.constraints:
                if c.metric == ERROR:
                    amount += c.violation(float(error)) / max(abs(c.bound), 1e-12)
        return amount

    def losses(self, genes: Genes, error: float) -> tuple[float, ...]:
        values = self.objectives.values(error, self.metrics(genes))
        return tuple(self.objectives.losses(values))

    def outcome(self, genes: Genes, error: float, fidelity: float = 1.0) -> Outcome:
        return Outcome(
            genes, self.losses(genes, error), self.violation_amount(genes, error), fidelity
        )

    def unrepairable_outcome(self, genes: Genes) -> Outcome:
        """What an algorithm is told of a vector that cannot be made feasible:
        beyond the reference point on the error, the worse the larger the excess."""
        error = 2.0 * self.reference[self.objectives.names.index(ERROR)] + self._excess(genes)
        return Outcome(genes, self.losses(genes, error), max(self._excess(genes), 1.0))

    def record(
        self,
        index: int,
        genes: Genes,
        result: EvaluationResult,
        *,
        seconds: float,
        origin: str,
        label: str = "",
    ) -> EvaluationRecord:
        """The log record of an evaluated vector."""
        genes = as_genes(genes)
        metrics = self.metrics(genes)
        violations = self.cheap_violations(genes)
        for c in self.constraints:
            if c.metric == ERROR and not c.satisfied(result.error):
                violations.append(f"{c.label}: error = {result.error:.4g}, bound {c.bound:g}")
        values = self.objectives.values(result.error, metrics)
        return EvaluationRecord(
            index=index,
            bits=self.assignment(genes).to_dict(),
            genes=list(genes),
            objectives=values,
            losses=self.objectives.losses(values),
            metrics=dict(metrics),
            error=float(result.error),
            feasible=not violations,
            violations=violations,
            evaluator=result.evaluator,
            seconds=float(seconds),
            origin=origin,
            label=label,
            fidelity=float(result.fidelity),
            extras={str(k): float(v) for k, v in result.extras.items()},
            method=str(result.method),
        )

    def outcome_of(self, record: EvaluationRecord) -> Outcome:
        return self.outcome(as_genes(record.genes), record.error, record.fidelity)

    # -- plan and description ---------------------------------------------------------------
    def baseline_plan(self, seeds: Sequence[Genes] = ()) -> list[tuple[Genes, str, str]]:
        """``(genes, origin, label)``: uniform baselines, then seeds not already planned."""
        plan: list[tuple[Genes, str, str]] = []
        for bits in self.baseline_bits:
            plan.append(
                (self.space.encode(self.space.uniform(bits)), "baseline", f"uniform-{bits}")
            )
        planned = {genes for genes, _, _ in plan}
        for number, genes in enumerate(seeds):
            genes = as_genes(genes)
            if genes not in planned:
                planned.add(genes)
                plan.append((genes, "seed", f"seed-{number}"))
        return plan

    def describe(self) -> dict[str, Any]:
        """JSON-able description stored with a run (a resume must match it)."""
        return {
            "platform": self.cost_model.name,
            "objectives": list(self.objectives.names),
            "maximized": [o.name for o in self.objectives.objectives if o.maximize],
            "constraints": [c.describe() for c in self.constraints],
            "space": self.space.describe(),
            "points": list(self.workload.names),
            "reference": list(self.reference),
        }
