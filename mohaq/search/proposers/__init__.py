"""Search algorithms behind one ask/tell protocol, registered by name.

Built-ins: ``surrogate`` (sensitivity probes, a Gaussian process, expected
hypervolume improvement; the search's default), ``nevergrad`` (any nevergrad
optimizer; ``TwoPointsDE-LHS`` by default), ``nsga2`` (pymoo, MOHAQ's
setting), ``random`` (uniform over the feasible space), ``haq`` (HAQ's DDPG
agent under a hardware budget).
"""

from mohaq.search.proposers.base import (
    AlgorithmOptions,
    Genes,
    Outcome,
    Proposer,
    ProposerContext,
)
from mohaq.search.proposers.registry import (
    AlgorithmError,
    ProposerEntry,
    algorithm_name,
    available_algorithms,
    build_proposer,
    describe_algorithms,
    register_proposer,
    resolve_algorithm,
)

__all__ = [
    "AlgorithmError",
    "AlgorithmOptions",
    "Genes",
    "Outcome",
    "Proposer",
    "ProposerContext",
    "ProposerEntry",
    "algorithm_name",
    "available_algorithms",
    "build_proposer",
    "describe_algorithms",
    "register_proposer",
    "resolve_algorithm",
]
