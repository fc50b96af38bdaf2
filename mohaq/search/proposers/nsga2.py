"""NSGA-II on pymoo (the library MOHAQ itself used), with MOHAQ's setting.

Population 40, 10 offspring per generation, integer genes (simulated binary
crossover and polynomial mutation on floats, rounded), duplicates eliminated,
constraint domination on the constraint violation. pymoo's ask/tell works by
generation: this proposer hands out a generation's individuals one by one and
tells pymoo once every one of them has an outcome.

Uniform baselines and seeds told before the first ask become the first
members of the initial population (the rest is drawn at random); vectors told
later without being asked join the next generation's infills, so NSGA-II's
survival selection sees them. When the loop repairs an infeasible child, the
repaired vector replaces it in the population (Lamarckian repair).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mohaq.search.proposers.base import (
    AlgorithmOptions,
    Genes,
    Outcome,
    Proposer,
    ProposerContext,
    as_genes,
)
from mohaq.search.proposers.registry import AlgorithmError, register_proposer


@dataclass
class NSGA2(AlgorithmOptions):
    """NSGA-II (pymoo) with MOHAQ's setting.

    Args:
        population: survivors per generation (MOHAQ: 40).
        offspring: children per generation (MOHAQ: 10).
        crossover_probability: probability that two parents are crossed (SBX).
        crossover_eta: distribution index of simulated binary crossover.
        mutation_eta: distribution index of polynomial mutation.
    """

    population: int = 40
    offspring: int = 10
    crossover_probability: float = 0.9
    crossover_eta: float = 15.0
    mutation_eta: float = 20.0

    def __post_init__(self) -> None:
        if isinstance(self.population, bool) or self.population < 2:
            raise AlgorithmError(f"NSGA2 population must be >= 2, got {self.population!r}")
        if isinstance(self.offspring, bool) or self.offspring < 1:
            raise AlgorithmError(f"NSGA2 offspring must be >= 1, got {self.offspring!r}")
        if not 0.0 <= self.crossover_probability <= 1.0:
            raise AlgorithmError(
                f"NSGA2 crossover_probability must be in [0, 1], got {self.crossover_probability!r}"
            )
        for name in ("crossover_eta", "mutation_eta"):
            if not getattr(self, name) > 0:
                raise AlgorithmError(f"NSGA2 {name} must be > 0, got {getattr(self, name)!r}")


def _gene_problem(num_genes: int, num_choices: int, num_objectives: int) -> Any:
    from pymoo.core.problem import Problem

    return Problem(
        n_var=num_genes,
        n_obj=num_objectives,
        n_ieq_constr=1,
        xl=0,
        xu=num_choices - 1,
        vtype=int,
    )


@dataclass
class _Generation:
    """The individuals pymoo asked for, and the outcomes received so far."""

    population: Any
    waiting: list[int]  # rows not handed out yet
    handed: dict[Genes, list[int]] = field(
        default_factory=dict
    )  # genes -> rows awaiting an outcome
    losses: dict[int, tuple[float, ...]] = field(default_factory=dict)
    violations: dict[int, float] = field(default_factory=dict)

    def complete(self) -> bool:
        return len(self.losses) == len(self.population)


@register_proposer(
    "nsga2",
    options=NSGA2,
    description="NSGA-II on pymoo, MOHAQ's setting (population 40, 10 offspring, integer genes)",
)
class NSGA2Proposer(Proposer):
    """pymoo's NSGA-II behind per-candidate ask/tell (see the module docstring)."""

    def __init__(self, options: NSGA2, context: ProposerContext) -> None:
        super().__init__(options, context)
        self.algorithm: Any = None
        self.generation: _Generation | None = None
        self.observed: list[Outcome] = []  # told before the algorithm started
        self.extra: list[Outcome] = []  # told without asking, for the next infills

    # -- pymoo ----------------------------------------------------------------------------
    def _start(self) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair

        options: NSGA2 = self.options  # type: ignore[assignment]
        context = self.context
        rng = np.random.default_rng(context.seed)
        rows: list[Genes] = []
        for outcome in self.observed:
            if outcome.genes not in rows and len(rows) < options.population:
                rows.append(outcome.genes)
        self.extra.extend(o for o in self.observed if o.genes not in rows)
        while len(rows) < options.population:
            rows.append(as_genes(rng.integers(context.num_choices, size=context.num_genes)))
        self.algorithm = PymooNSGA2(
            pop_size=options.population,
            n_offsprings=options.offspring,
            sampling=np.asarray(rows, dtype=float),
            crossover=SBX(
                prob=options.crossover_probability,
                eta=options.crossover_eta,
                vtype=float,
                repair=RoundingRepair(),
            ),
            mutation=PM(eta=options.mutation_eta, vtype=float, repair=RoundingRepair()),
            eliminate_duplicates=True,
        )
        problem = _gene_problem(
            context.num_genes, context.num_choices, len(context.problem.objectives)
        )
        self.algorithm.setup(problem, termination=("n_evals", 2**62), seed=context.seed)

    def _next_generation(self) -> None:
        population = self.algorithm.ask()
        self.generation = _Generation(population, list(range(len(population))))

    def _genes_of(self, row: int) -> Genes:
        assert self.generation is not None
        values = self.generation.population[row].X
        return as_genes(np.clip(np.rint(values), 0, self.context.num_choices - 1))

    def _finish_generation(self) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.core.population import Population
        from pymoo.problems.static import StaticProblem

        generation = self.generation
        assert generation is not None
        infills = generation.population
        order = range(len(infills))
        infills.set("X", np.asarray([self._genes_of(i) for i in order], dtype=float))
        losses = np.asarray([generation.losses[i] for i in order], dtype=float)
        violations = np.asarray([[generation.violations[i]] for i in order], dtype=float)
        if self.extra:
            extra = Population.new("X", np.asarray([o.genes for o in self.extra], dtype=float))
            infills = Population.merge(infills, extra)
            losses = np.vstack([losses, [o.losses for o in self.extra]])
            violations = np.vstack([violations, [[o.violation] for o in self.extra]])
            self.extra = []
        static = StaticProblem(self.algorithm.problem, F=losses, G=violations)
        Evaluator().eval(static, infills)
        self.algorithm.tell(infills=infills)
        self.generation = None

    # -- ask/tell -------------------------------------------------------------------------
    def ask(self, count: int) -> list[Genes]:
        if self.algorithm is None:
            self._start()
        if self.generation is None:
            self._next_generation()
        generation = self.generation
        assert generation is not None
        asked = []
        while generation.waiting and len(asked) < count:
            row = generation.waiting.pop(0)
            genes = self._genes_of(row)
            generation.handed.setdefault(genes, []).append(row)
            asked.append(genes)
        return asked  # empty: the generation's outcomes are still coming in

    def tell(self, genes: Genes, outcome: Outcome) -> None:
        generation = self.generation
        rows = generation.handed.get(genes) if generation is not None else None
        if not rows:
            (self.observed if self.algorithm is None else self.extra).append(outcome)
            return
        assert generation is not None
        row = rows.pop(0)
        if not rows:
            del generation.handed[genes]
        # Lamarckian repair: the individual becomes what was evaluated.
        generation.population[row].set("X", np.asarray(outcome.genes, dtype=float))
        generation.losses[row] = tuple(outcome.losses)
        generation.violations[row] = float(outcome.violation)
        if generation.complete():
            self._finish_generation()

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "generation": self.generation,
            "observed": self.observed,
            "extra": self.extra,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.algorithm = state["algorithm"]
        self.generation = state["generation"]
        self.observed = list(state["observed"])
        self.extra = list(state["extra"])
        generation = self.generation
        if generation is not None and generation.handed:
            # Handed out but never told before the save: propose them again.
            again = sorted(row for rows in generation.handed.values() for row in rows)
            generation.waiting = again + generation.waiting
            generation.handed = {}
