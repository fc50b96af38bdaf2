"""Random search: uniform over the feasible space, the baseline every
algorithm must beat at equal budget.

A draw that breaks a cheap constraint is redrawn (uniform over the feasible
region) up to ``max_draws`` times; if the feasible region is so small that
none of those draws lands in it, the last draw is repaired (lowered until it
fits), so an infeasible space never costs seconds of rejection sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
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
class RandomSearch(AlgorithmOptions):
    """Uniform random search over the feasible assignments.

    Args:
        max_draws: draws per proposal before an infeasible one is repaired.
    """

    max_draws: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.max_draws, bool) or self.max_draws < 1:
            raise AlgorithmError(f"RandomSearch max_draws must be >= 1, got {self.max_draws!r}")


@register_proposer(
    "random",
    options=RandomSearch,
    description="uniform random search over the feasible assignments (the baseline)",
)
class RandomSearchProposer(Proposer):
    """Independent uniform draws; learns nothing from outcomes."""

    def __init__(self, options: RandomSearch, context: ProposerContext) -> None:
        super().__init__(options, context)
        self.rng = np.random.default_rng(context.seed)
        self.seen: set[Genes] = set()

    def _draw(self) -> Genes:
        return as_genes(self.rng.integers(self.context.num_choices, size=self.context.num_genes))

    def _propose(self) -> Genes:
        problem = self.context.problem
        options: RandomSearch = self.options  # type: ignore[assignment]
        genes = self._draw()
        for _ in range(options.max_draws - 1):
            if genes not in self.seen and problem.is_feasible(genes):
                return genes
            genes = self._draw()
        return genes  # the loop repairs it if it is infeasible

    def ask(self, count: int) -> list[Genes]:
        asked = [self._propose() for _ in range(count)]
        self.seen.update(asked)
        return asked

    def tell(self, genes: Genes, outcome: Outcome) -> None:
        self.seen.add(outcome.genes)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "seen": sorted(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.seen = {as_genes(g) for g in state["seen"]}
