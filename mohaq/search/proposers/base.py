"""The proposer protocol: what a search algorithm is to the search loop.

A proposer suggests gene vectors (one choice index per gene of the
:class:`~mohaq.search.space.SearchSpace`) and learns from their outcomes:

* ``ask(count)`` returns up to ``count`` gene vectors to evaluate; fewer (or
  none) when it must wait for results it asked for;
* ``tell(genes, outcome)`` gives the outcome of ``genes``: of a vector it asked
  for (``outcome.genes`` may differ when the loop repaired an infeasible
  proposal, and a proposer may adopt the repaired vector), or of one it never
  asked for (uniform baselines, seeds, a resumed log);
* ``state_dict()`` / ``load_state_dict()`` persist everything it needs to go on
  after a crash (the loop pickles the state). Proposals that were asked but not
  told when the state was saved must either be proposed again after loading or
  be forgotten: the loop never tells them otherwise.

Each proposer has its own typed options, an :class:`AlgorithmOptions`
dataclass: its fields are the algorithm's knobs, and LightningCLI builds their
command-line and YAML schema from it (``--algorithm NSGA2
--algorithm.population 40``). A proposer is registered once under a name with
:func:`~mohaq.search.proposers.registry.register_proposer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from mohaq.search.callbacks import SearchCallback
    from mohaq.search.problem import SearchProblem

Genes = tuple[int, ...]


class AlgorithmOptions:
    """Base of every proposer's options (each a dataclass).

    ``from_name`` lets an options class claim a plain algorithm name that is
    not a registered proposer name (the nevergrad proposer claims every
    nevergrad optimizer name).
    """

    @classmethod
    def from_name(cls, name: str) -> AlgorithmOptions | None:
        """Options for ``name``, or None when this algorithm does not know it."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def callbacks(self) -> list[SearchCallback]:
        """Reporting callbacks the algorithm adds to every search it runs
        (HAQ's per-budget report); none by default."""
        return []


@dataclass(frozen=True)
class Outcome:
    """What an evaluation told about a gene vector.

    Attributes:
        genes: the vector that was evaluated (the repaired one, if repaired).
        losses: one loss per objective (maximized objectives negated).
        violation: 0 when every constraint holds, else how far outside the
            constraints it is (sum of relative excesses, platform violations
            counted as 1 each).
        fidelity: the share of the optimization set the error was measured on
            (below 1 when a multi-fidelity evaluation stopped early).
    """

    genes: Genes
    losses: tuple[float, ...]
    violation: float = 0.0
    fidelity: float = 1.0

    @property
    def feasible(self) -> bool:
        return self.violation <= 0.0


@dataclass(frozen=True)
class ProposerContext:
    """What a proposer may know about the search it serves.

    Attributes:
        problem: the search problem. Proposers use its ``space`` (genes and
            bit choices), ``is_feasible(genes)`` and ``repair(genes)`` (cheap
            constraints), and ``cost_losses(genes)`` (exact cost objectives,
            no evaluation needed).
        budget: distinct evaluations planned.
        workers: evaluations in flight at once (the size of useful batches).
        seed: the search seed.
    """

    problem: SearchProblem
    budget: int
    workers: int
    seed: int

    @property
    def num_genes(self) -> int:
        return self.problem.space.num_genes

    @property
    def num_choices(self) -> int:
        return len(self.problem.space.choices)

    @property
    def reference(self) -> tuple[float, ...]:
        return self.problem.reference


class Proposer(ABC):
    """A search algorithm behind the ask/tell protocol (see the module docstring).

    Args:
        options: the algorithm's typed options.
        context: the search it serves.
    """

    options_type: ClassVar[type[AlgorithmOptions]] = AlgorithmOptions

    def __init__(self, options: AlgorithmOptions, context: ProposerContext) -> None:
        self.options = options
        self.context = context

    @abstractmethod
    def ask(self, count: int) -> list[Genes]:
        """Up to ``count`` gene vectors to evaluate next (may be fewer, or none)."""

    @abstractmethod
    def tell(self, genes: Genes, outcome: Outcome) -> None:
        """The outcome of ``genes`` (asked for or not)."""

    def evaluate_as_proposed(self, genes: Genes) -> bool:
        """True for a measurement (e.g. a sensitivity probe) to evaluate even if it
        breaks a cheap constraint: its record is then infeasible, never on the
        front. Other proposals that break one are repaired first."""
        return False

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Picklable state from which :meth:`load_state_dict` resumes."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`'s state."""


def as_genes(values: Sequence[Any]) -> Genes:
    """A hashable gene vector of Python ints."""
    return tuple(int(v) for v in values)
