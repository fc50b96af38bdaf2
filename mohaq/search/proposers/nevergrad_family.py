"""Any optimizer of nevergrad's registry as a proposer.

The genes are an integer-cast ``ng.p.Array`` of choice indices (a ``Choice``
parametrization breaks ``pareto_front`` and samples by softmax; see
ECOSYSTEM.md). No cheap constraint is registered with nevergrad: its
rejection sampling costs seconds when most of the space is infeasible; the
loop repairs infeasible proposals instead and tells nevergrad the outcome of
the repaired candidate.
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
)
from mohaq.search.proposers.registry import AlgorithmError, register_proposer

#: Two-point differential evolution with a Latin-hypercube first population
#: (without LHS, DE's first population is biased toward middle values).
TWO_POINTS_DE_LHS = "TwoPointsDE-LHS"


def _family(name: str) -> Any:
    import nevergrad as ng

    if name == TWO_POINTS_DE_LHS:
        return ng.families.DifferentialEvolution(crossover="twopoints", initialization="LHS")
    return ng.optimizers.registry[name]


def is_nevergrad_optimizer(name: str) -> bool:
    if name == TWO_POINTS_DE_LHS:
        return True
    import nevergrad as ng

    return name in ng.optimizers.registry


@dataclass
class Nevergrad(AlgorithmOptions):
    """A nevergrad optimizer, multi-objective through its loss vectors.

    Args:
        optimizer: ``TwoPointsDE-LHS`` (two-point differential evolution with
            a Latin-hypercube start) or any name in ``nevergrad.optimizers.registry``
            (DE, CMA, NGOpt, RandomSearch, ...).
    """

    optimizer: str = TWO_POINTS_DE_LHS

    def __post_init__(self) -> None:
        if not is_nevergrad_optimizer(self.optimizer):
            raise AlgorithmError(
                f"unknown nevergrad optimizer {self.optimizer!r}; examples: "
                f"{TWO_POINTS_DE_LHS}, TwoPointsDE, DE, CMA, NGOpt, RandomSearch "
                "(any name in nevergrad.optimizers.registry)"
            )

    @classmethod
    def from_name(cls, name: str) -> Nevergrad | None:
        return cls(optimizer=name) if is_nevergrad_optimizer(name) else None


@register_proposer(
    "nevergrad",
    options=Nevergrad,
    description="any nevergrad optimizer (default TwoPointsDE-LHS); "
    "a plain nevergrad optimizer name selects it",
)
class NevergradProposer(Proposer):
    """nevergrad ask/tell over the integer-cast gene array."""

    def __init__(self, options: Nevergrad, context: ProposerContext) -> None:
        super().__init__(options, context)
        import nevergrad as ng

        parametrization = ng.p.Array(
            shape=(context.num_genes,), lower=-0.5, upper=context.num_choices - 0.5
        ).set_integer_casting()
        parametrization.random_state.seed(context.seed)
        self.optimizer = _family(options.optimizer)(
            parametrization, budget=context.budget, num_workers=context.workers
        )
        # A fixed reference instead of one guessed from the first tells.
        self.optimizer.tell(ng.p.MultiobjectiveReference(), list(context.reference))
        self.pending: dict[Genes, list[Any]] = {}

    def ask(self, count: int) -> list[Genes]:
        space = self.context.problem.space
        asked = []
        for _ in range(count):
            candidate = self.optimizer.ask()
            genes = space.genes_from_value(candidate.value)
            self.pending.setdefault(genes, []).append(candidate)
            asked.append(genes)
        return asked

    def tell(self, genes: Genes, outcome: Outcome) -> None:
        waiting = self.pending.get(genes)
        if waiting:
            candidate = waiting.pop(0)
            if not waiting:
                del self.pending[genes]
            self.optimizer.tell(candidate, list(outcome.losses))
            return
        from nevergrad.common.errors import TellNotAskedNotSupportedError

        child = self.optimizer.parametrization.spawn_child(
            new_value=np.asarray(outcome.genes, dtype=float)
        )
        try:
            self.optimizer.tell(child, list(outcome.losses))
        except TellNotAskedNotSupportedError:
            pass  # this optimizer learns only from its own candidates

    def state_dict(self) -> dict[str, Any]:
        # What ``optimizer.dump`` writes: a pickle of the whole optimizer;
        # pending candidates are pickled with it (they share its parametrization).
        return {"optimizer": self.optimizer, "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer = state["optimizer"]
        self.pending = state["pending"]
