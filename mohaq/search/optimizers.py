"""Proposers: the optimizers behind the search controller, behind one small
ask/tell interface over gene vectors (choice indices).

* :class:`NevergradProposer` wraps any optimizer of ``ng.optimizers.registry``
  (plus ``"TwoPointsDE-LHS"``, the default: two-point differential evolution
  with a Latin-hypercube first population).
* :class:`NSGA2` is MOHAQ's setting (population 40, 10 offspring per
  generation, integer genes, SBX crossover and polynomial mutation rounded to
  integers, duplicates eliminated), written here because nevergrad's
  ``PymooNSGA2`` does not work with pymoo 0.6.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mohaq.search.pareto import crowding_distance, non_dominated_sort

DEFAULT_OPTIMIZER = "TwoPointsDE-LHS"
NSGA2_NAME = "nsga2"

Genes = tuple[int, ...]


class OptimizerNameError(ValueError):
    """An optimizer name that is neither a nevergrad registry entry nor ``nsga2``."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def validate_optimizer_name(name: str) -> None:
    """Raises OptimizerNameError listing a few valid names for an unknown one."""
    if name in (DEFAULT_OPTIMIZER, NSGA2_NAME):
        return
    import nevergrad as ng

    if name not in ng.optimizers.registry:
        examples = [
            DEFAULT_OPTIMIZER,
            NSGA2_NAME,
            "TwoPointsDE",
            "DE",
            "RandomSearch",
            "NGOpt",
            "CMA",
        ]
        raise OptimizerNameError(
            f"unknown optimizer {name!r}; valid examples: {examples} "
            f"(any of the {len(ng.optimizers.registry)} names in nevergrad.optimizers.registry)"
        )


class NevergradProposer:
    """A nevergrad optimizer over the space's integer-cast gene array.

    Args:
        parametrization: the space's ``ng.p.Array`` (cheap constraint registered).
        name: optimizer name.
        budget: number of distinct evaluations planned.
        workers: candidates in flight at once.
        seed: seeds the parametrization's random state.
        reference: the fixed upper bound of every loss (MultiobjectiveReference).
    """

    def __init__(
        self,
        parametrization: Any,
        name: str,
        *,
        budget: int,
        workers: int,
        seed: int,
        reference: Sequence[float],
        constraint_trials: int = 40,
    ) -> None:
        import nevergrad as ng

        validate_optimizer_name(name)
        parametrization.random_state.seed(seed)
        if name == DEFAULT_OPTIMIZER:
            family = ng.families.DifferentialEvolution(crossover="twopoints", initialization="LHS")
        else:
            family = ng.optimizers.registry[name]
        self.name = name
        self.optimizer = family(parametrization, budget=budget, num_workers=workers)
        # nevergrad redraws a candidate up to max_trials/2 times and then runs a
        # constraint solver of max_trials/2 steps; with a small feasible region
        # (MOHAQ's 2 MB Bitfusion runs) the default 1000 makes every ask cost
        # seconds. The controller re-checks and penalizes what slips through.
        manager = getattr(self.optimizer, "_constraints_manager", None)
        if manager is not None and hasattr(manager, "update"):
            manager.update(max_trials=constraint_trials)
        self.optimizer.tell(ng.p.MultiobjectiveReference(), list(reference))

    def ask(self) -> tuple[Any, np.ndarray]:
        from nevergrad.common.errors import FailedConstraintWarning

        with warnings.catch_warnings():
            # Expected with small feasible regions; the controller handles it.
            warnings.simplefilter("ignore", FailedConstraintWarning)
            candidate = self.optimizer.ask()
        return candidate, np.asarray(candidate.value)

    def tell(self, token: Any, losses: Sequence[float], violation: float = 0.0) -> None:
        self.optimizer.tell(token, list(losses))

    def tell_not_asked(self, genes: Genes, losses: Sequence[float], violation: float = 0.0) -> None:
        from nevergrad.common.errors import TellNotAskedNotSupportedError

        child = self.optimizer.parametrization.spawn_child(new_value=np.asarray(genes, dtype=float))
        try:
            self.optimizer.tell(child, list(losses))
        except TellNotAskedNotSupportedError:
            pass  # this optimizer learns only from its own candidates

    def state_bytes(self) -> bytes:
        """What ``optimizer.dump`` writes (a pickle of the optimizer)."""
        return pickle.dumps(self.optimizer)

    def load_state_bytes(self, data: bytes) -> None:
        self.optimizer = pickle.loads(data)


class NSGA2:
    """NSGA-II on integer genes with constraint domination.

    Args:
        num_genes: genes per candidate.
        num_choices: values per gene (indices 0..num_choices-1).
        population_size: survivors per generation (MOHAQ: 40).
        offspring: children per generation (MOHAQ: 10).
        seed: the generator's seed.
        feasible: cheap check of a gene vector; infeasible children are redrawn.
        crossover_eta, mutation_eta: distribution indices of SBX and polynomial mutation.
        crossover_probability: probability that two parents are crossed.
    """

    name = NSGA2_NAME

    def __init__(
        self,
        num_genes: int,
        num_choices: int,
        *,
        population_size: int = 40,
        offspring: int = 10,
        seed: int = 0,
        feasible: Callable[[np.ndarray], bool] | None = None,
        crossover_eta: float = 15.0,
        mutation_eta: float = 20.0,
        crossover_probability: float = 0.9,
    ) -> None:
        if population_size < 2 or offspring < 1:
            raise ValueError(
                f"population_size must be >= 2 and offspring >= 1; got {population_size}, {offspring}"
            )
        self.num_genes = num_genes
        self.num_choices = num_choices
        self.population_size = population_size
        self.offspring = offspring
        self.feasible = feasible
        self.crossover_eta = crossover_eta
        self.mutation_eta = mutation_eta
        self.crossover_probability = crossover_probability
        self.rng = np.random.default_rng(seed)
        self.population: list[dict[str, Any]] = []  # survivors, with rank and crowding
        self.initial: list[dict[str, Any]] = []
        self.children: list[dict[str, Any]] = []
        self.pending: list[Genes] = []
        self.seen: set[Genes] = set()
        self.initialized = False
        self.generation = 0

    # -- ask/tell -----------------------------------------------------------------------
    def ask(self) -> tuple[Genes, np.ndarray]:
        if not self.pending:
            if self.initialized:
                self.pending = self._make_children(self.offspring)
            else:
                needed = max(1, self.population_size - len(self.initial))
                self.pending = [self._unique(self._random) for _ in range(needed)]
        genes = self.pending.pop(0)
        return genes, np.asarray(genes)

    def tell(self, token: Genes, losses: Sequence[float], violation: float = 0.0) -> None:
        self._add(tuple(int(g) for g in token), losses, violation)

    def tell_not_asked(self, genes: Genes, losses: Sequence[float], violation: float = 0.0) -> None:
        self._add(tuple(int(g) for g in genes), losses, violation)

    def _add(self, genes: Genes, losses: Sequence[float], violation: float) -> None:
        self.seen.add(genes)
        record = {
            "genes": list(genes),
            "losses": [float(x) for x in losses],
            "violation": float(violation),
        }
        if not self.initialized:
            self.initial.append(record)
            if len(self.initial) >= self.population_size:
                self.population = self._survive(self.initial)
                self.initial = []
                self.initialized = True
                self.pending = []
            return
        self.children.append(record)
        if len(self.children) >= self.offspring:
            self.population = self._survive(self.population + self.children)
            self.children = []
            self.generation += 1

    # -- selection ----------------------------------------------------------------------
    def _survive(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        unique: dict[tuple[int, ...], dict[str, Any]] = {}
        for record in records:
            unique.setdefault(tuple(record["genes"]), record)
        records = list(unique.values())
        feasible = [r for r in records if r["violation"] <= 0]
        infeasible = sorted(
            (r for r in records if r["violation"] > 0), key=lambda r: r["violation"]
        )
        survivors: list[dict[str, Any]] = []
        fronts = non_dominated_sort([r["losses"] for r in feasible])
        for rank, front in enumerate(fronts):
            members = [feasible[i] for i in front]
            distance = crowding_distance([m["losses"] for m in members])
            for member, crowd in zip(members, distance, strict=True):
                member["rank"], member["crowding"] = rank, float(crowd)
            room = self.population_size - len(survivors)
            if len(members) <= room:
                survivors.extend(members)
            else:
                order = sorted(range(len(members)), key=lambda i: -distance[i])
                survivors.extend(members[i] for i in order[:room])
            if len(survivors) >= self.population_size:
                return survivors
        for record in infeasible[: self.population_size - len(survivors)]:
            record["rank"], record["crowding"] = len(fronts), 0.0
            survivors.append(record)
        return survivors

    def _better(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        key_a = (a["violation"], a["rank"], -a["crowding"])
        key_b = (b["violation"], b["rank"], -b["crowding"])
        if key_a == key_b:
            return a if self.rng.random() < 0.5 else b
        return a if key_a < key_b else b

    def _tournament(self) -> np.ndarray:
        i, j = self.rng.integers(len(self.population), size=2)
        return np.asarray(
            self._better(self.population[i], self.population[j])["genes"], dtype=float
        )

    # -- variation ----------------------------------------------------------------------
    def _random(self) -> Genes:
        return tuple(int(g) for g in self.rng.integers(self.num_choices, size=self.num_genes))

    def _sbx(self, p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low, high = -0.5, self.num_choices - 0.5
        c1, c2 = p1.copy(), p2.copy()
        if self.rng.random() > self.crossover_probability:
            return c1, c2
        for i in range(self.num_genes):
            if self.rng.random() > 0.5 or abs(p1[i] - p2[i]) < 1e-12:
                continue
            y1, y2 = min(p1[i], p2[i]), max(p1[i], p2[i])
            u = self.rng.random()

            q1 = self._spread(u, 1.0 + 2.0 * (y1 - low) / (y2 - y1))
            q2 = self._spread(u, 1.0 + 2.0 * (high - y2) / (y2 - y1))
            a = np.clip(0.5 * ((y1 + y2) - q1 * (y2 - y1)), low, high)
            b = np.clip(0.5 * ((y1 + y2) + q2 * (y2 - y1)), low, high)
            if self.rng.random() < 0.5:
                a, b = b, a
            c1[i], c2[i] = a, b
        return c1, c2

    def _spread(self, u: float, beta: float) -> float:
        eta = self.crossover_eta
        alpha = 2.0 - beta ** -(eta + 1.0)
        if u <= 1.0 / alpha:
            return (u * alpha) ** (1.0 / (eta + 1.0))
        return (1.0 / (2.0 - u * alpha)) ** (1.0 / (eta + 1.0))

    def _mutate(self, x: np.ndarray) -> np.ndarray:
        low, high, eta = -0.5, self.num_choices - 0.5, self.mutation_eta
        y = x.copy()
        for i in range(self.num_genes):
            if self.rng.random() > 1.0 / self.num_genes:
                continue
            d1, d2 = (y[i] - low) / (high - low), (high - y[i]) / (high - low)
            u, power = self.rng.random(), 1.0 / (eta + 1.0)
            if u < 0.5:
                value = 2 * u + (1 - 2 * u) * (1 - d1) ** (eta + 1)
                delta = value**power - 1
            else:
                value = 2 * (1 - u) + 2 * (u - 0.5) * (1 - d2) ** (eta + 1)
                delta = 1 - value**power
            y[i] = np.clip(y[i] + delta * (high - low), low, high)
        return y

    def _round(self, x: np.ndarray) -> Genes:
        return tuple(int(g) for g in np.clip(np.rint(x), 0, self.num_choices - 1))

    def _acceptable(self, genes: Genes, batch: Sequence[Genes]) -> bool:
        if genes in self.seen or genes in batch:
            return False
        return self.feasible is None or bool(self.feasible(np.asarray(genes)))

    def _unique(
        self, draw: Callable[[], Genes], batch: Sequence[Genes] = (), tries: int = 100
    ) -> Genes:
        genes = draw()
        for _ in range(tries):
            if self._acceptable(genes, batch):
                break
            genes = draw()
        self.seen.add(genes)
        return genes

    def _make_children(self, count: int) -> list[Genes]:
        batch: list[Genes] = []
        pool: list[Genes] = []

        def draw() -> Genes:
            if not pool:
                c1, c2 = self._sbx(self._tournament(), self._tournament())
                pool.extend([self._round(self._mutate(c1)), self._round(self._mutate(c2))])
            child = pool.pop()
            if child in self.seen or child in batch:
                # Integer rounding often undoes a small mutation: reset one gene instead.
                mutated = list(child)
                mutated[int(self.rng.integers(self.num_genes))] = int(
                    self.rng.integers(self.num_choices)
                )
                child = tuple(mutated)
            return child

        while len(batch) < count:
            batch.append(self._unique(draw, batch))
        return batch

    # -- persistence --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "population": self.population,
            "initial": self.initial,
            "children": self.children,
            "pending": [list(g) for g in self.pending],
            "seen": sorted(list(g) for g in self.seen),
            "initialized": self.initialized,
            "generation": self.generation,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population = state["population"]
        self.initial = state["initial"]
        self.children = state["children"]
        self.pending = [tuple(g) for g in state["pending"]]
        self.seen = {tuple(g) for g in state["seen"]}
        self.initialized = state["initialized"]
        self.generation = state["generation"]
        self.rng.bit_generator.state = state["rng"]

    def state_bytes(self) -> bytes:
        return json.dumps(self.state_dict()).encode()

    def load_state_bytes(self, data: bytes) -> None:
        self.load_state_dict(json.loads(data.decode()))
