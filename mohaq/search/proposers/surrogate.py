"""A search that learns from what it has measured: sensitivity probes, a
Gaussian-process surrogate of the error, exact costs, and expected
hypervolume improvement.

1. Probes. Each gene is lowered alone to each of its ``probe_choices`` lowest
   bit choices, the others at the highest; the error increase over the
   all-highest baseline is that gene's sensitivity at that choice (HAWQ's
   additive view). Probes are ordinary evaluations (records); one that breaks
   a cheap constraint is still measured (its record is infeasible).
2. Surrogate. The error of an assignment is modelled as the additive
   prediction (all-highest error + the genes' sensitivities) plus a residual
   that a Gaussian process learns from every measurement: the interactions
   that make errors compound at low precision. Inputs are the genes'
   sensitivities and the additive sum, so the process sees how degraded an
   assignment is expected to be, and where. The process gives a mean and an
   uncertainty per candidate; partial (multi-fidelity) measurements enter with
   a larger noise.
3. Costs are never learned: the cost model prices every candidate exactly.
4. Acquisition. Candidates (neighbours of the measured front, sensitivity-
   guided descent paths from the all-highest assignment, random feasible
   draws) are scored by their expected hypervolume improvement over the
   measured front: with exact costs and a normal error, it has a closed form
   (a sum over the front's error levels of the uncovered cost volume times the
   integral of the error's distribution). A batch for parallel workers is
   chosen greedily, each chosen candidate joining the front at its predicted
   error (kriging believer) before the next is scored.

The Gaussian process is scikit-learn's (``GaussianProcessRegressor``): a
well-kept, small dependency whose fit on a few hundred points takes
milliseconds; botorch would bring a large stack for a 1-D uncertain
objective whose expected improvement has a closed form here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from mohaq.search.objectives import ERROR
from mohaq.search.pareto import hypervolume
from mohaq.search.proposers.base import (
    AlgorithmOptions,
    Genes,
    Outcome,
    Proposer,
    ProposerContext,
    as_genes,
)
from mohaq.search.proposers.registry import AlgorithmError, register_proposer

#: Measurement noise (standard deviation of the error) of a full evaluation.
FULL_FIDELITY_NOISE = 0.005
#: Candidates scored exactly when there are several cost objectives.
SCREENED = 200


@dataclass
class Surrogate(AlgorithmOptions):
    """Sensitivity probes, then a Gaussian-process surrogate and expected
    hypervolume improvement over exact costs.

    Args:
        probe_choices: per gene, how many of the lowest bit choices are probed
            (0: no probes; the process then learns from one-hot genes).
        pool: candidates scored per proposal round.
        random_candidates: share of the pool drawn at random (the rest:
            neighbours of the front and descent paths).
        restarts: restarts of the process's hyperparameter optimizer.
        max_points: most measurements the process is fitted on (its cost grows
            with their cube): the all-highest assignment, the probes and the
            uniform baselines, then the best non-dominated ranks.
        refit_growth: the kernel's hyperparameters are optimized again only
            once the measurements grew by this share since the last
            optimization; in between the process is refitted on the new data
            with the stored kernel (a linear solve, no optimizer).
    """

    probe_choices: int = 2
    pool: int = 1500
    random_candidates: float = 0.3
    restarts: int = 2
    max_points: int = 300
    refit_growth: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.probe_choices, bool) or self.probe_choices < 0:
            raise AlgorithmError(
                f"Surrogate probe_choices must be >= 0, got {self.probe_choices!r}"
            )
        if self.pool < 10:
            raise AlgorithmError(f"Surrogate pool must be >= 10, got {self.pool!r}")
        if not 0.0 <= self.random_candidates <= 1.0:
            raise AlgorithmError(
                f"Surrogate random_candidates must be in [0, 1], got {self.random_candidates!r}"
            )
        if self.restarts < 0:
            raise AlgorithmError(f"Surrogate restarts must be >= 0, got {self.restarts!r}")
        if isinstance(self.max_points, bool) or self.max_points < 20:
            raise AlgorithmError(f"Surrogate max_points must be >= 20, got {self.max_points!r}")
        if self.refit_growth < 0.0:
            raise AlgorithmError(f"Surrogate refit_growth must be >= 0, got {self.refit_growth!r}")


def _normal_integral(t: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """∫_{-inf}^{t} P(error <= u) du for error ~ N(mean, std): std (z Φ(z) + φ(z))."""
    from scipy.stats import norm

    z = (t - mean) / std
    return std * (z * norm.cdf(z) + norm.pdf(z))


def _non_domination_probability(
    mean: np.ndarray, std: np.ndarray, costs: np.ndarray, front: list[np.ndarray]
) -> np.ndarray:
    """P(error below every front point whose costs are at least as good)."""
    from scipy.stats import norm

    threshold = np.full(len(mean), np.inf)
    for point in front:
        at_least_as_cheap = np.all(point[1:] <= costs, axis=1)
        threshold = np.where(at_least_as_cheap, np.minimum(threshold, point[0]), threshold)
    return norm.cdf((threshold - mean) / np.maximum(std, 1e-9))


def _staircase_area(points: np.ndarray, reference: np.ndarray) -> float:
    """Area dominated by 2-D points up to ``reference`` (a sweep over x)."""
    inside = points[np.all(points < reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    inside = inside[np.argsort(inside[:, 0], kind="stable")]
    area, best_y = 0.0, reference[1]
    for k in range(len(inside)):
        x, y = inside[k]
        if y < best_y:  # a new strip, from x to the reference, below the ones before
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def expected_hvi(
    mean: np.ndarray,
    std: np.ndarray,
    costs: np.ndarray,
    front: np.ndarray,
    reference: np.ndarray,
) -> np.ndarray:
    """Expected hypervolume improvement of candidates whose first loss (the
    error) is ``N(mean, std)`` and whose other losses ``costs`` are exact.

    Args:
        mean, std: (n,) the error's distribution per candidate.
        costs: (n, m) the exact cost losses.
        front: (k, 1 + m) the current front's losses, error first.
        reference: (1 + m,) the hypervolume reference point.

    The improvement of a point (e, c) is ∫_e^{r_e} A(t) dt, where A(t) is the
    volume of the box [c, r_c] not dominated by front points with error <= t;
    A is a step function changing at the front's errors, so the expectation is
    a sum of A's steps times the normal integral over each step.
    """
    n, m = costs.shape
    ref_error, ref_cost = reference[0], reference[1:]
    std = np.maximum(std, 1e-9)
    order = np.argsort(front[:, 0], kind="stable") if len(front) else np.zeros(0, dtype=int)
    levels = front[order, 0] if len(front) else np.zeros(0)
    box = np.prod(np.clip(ref_cost - costs, 0.0, None), axis=1)
    uncovered = np.empty((len(levels) + 1, n))
    uncovered[0] = box
    for i in range(1, len(levels) + 1):
        covering = front[order[:i], 1:]
        if m == 1:
            reach = np.minimum(covering[:, 0].min(), ref_cost[0])
            uncovered[i] = np.clip(reach - costs[:, 0], 0.0, None)
        else:
            for j in range(n):
                if box[j] <= 0:
                    uncovered[i, j] = 0.0
                    continue
                clipped = np.maximum(covering, costs[j])
                covered = (
                    _staircase_area(clipped, ref_cost) if m == 2 else hypervolume(clipped, ref_cost)
                )
                uncovered[i, j] = box[j] - covered
    edges = np.concatenate([[-np.inf], np.minimum(levels, ref_error), [ref_error]])
    total = np.zeros(n)
    for i in range(len(levels) + 1):
        low, high = edges[i], edges[i + 1]
        if high <= low:
            continue
        upper = _normal_integral(np.full(n, high), mean, std)
        lower = np.zeros(n) if np.isinf(low) else _normal_integral(np.full(n, low), mean, std)
        total += uncovered[i] * (upper - lower)
    return total


@register_proposer(
    "surrogate",
    options=Surrogate,
    description="sensitivity probes, a Gaussian-process surrogate of the error, exact costs, "
    "expected hypervolume improvement (learns from every measurement)",
)
class SurrogateProposer(Proposer):
    """Probes first, then expected hypervolume improvement on the surrogate."""

    def __init__(self, options: Surrogate, context: ProposerContext) -> None:
        super().__init__(options, context)
        problem = context.problem
        self.error_index = problem.objectives.names.index(ERROR)
        self.top = context.num_choices - 1
        self.rng = np.random.default_rng(context.seed)
        self.observed: dict[Genes, Outcome] = {}
        self.pending: set[Genes] = set()
        self.probes = self._probe_plan()
        self.probe_set = set(self.probes)
        self.paths: list[Genes] | None = None
        self._model: Any = None
        self._model_size = -1
        # The kernel with optimized hyperparameters and how many measurements
        # it was optimized on: state, so a resumed search refits identically.
        self._kernel: Any = None
        self._kernel_size = 0
        self._kernel_onehot = False

    # -- probes --------------------------------------------------------------------------
    def _probe_plan(self) -> list[Genes]:
        count = min(self.options.probe_choices, self.top)  # type: ignore[attr-defined]
        plan = []
        for choice in range(count):
            for gene in range(self.context.num_genes):
                genes = [self.top] * self.context.num_genes
                genes[gene] = choice
                plan.append(tuple(genes))
        return plan

    def evaluate_as_proposed(self, genes: Genes) -> bool:
        return genes in self.probe_set

    def _error(self, outcome: Outcome) -> float:
        return float(outcome.losses[self.error_index])

    def _sensitivities(self) -> np.ndarray | None:
        """[gene, choice] error increase over the all-highest assignment; probed
        choices measured, others interpolated by quantization noise (MSE falls
        4x per bit), None before the all-highest assignment is measured."""
        top_genes = (self.top,) * self.context.num_genes
        if top_genes not in self.observed:
            return None
        base = self._error(self.observed[top_genes])
        choices = self.context.problem.space.choices
        table = np.zeros((self.context.num_genes, self.top + 1))
        for gene in range(self.context.num_genes):
            measured: dict[int, float] = {}
            for choice in range(self.top):
                probe = list(top_genes)
                probe[gene] = choice
                outcome = self.observed.get(tuple(probe))
                if outcome is not None:
                    measured[choice] = max(0.0, self._error(outcome) - base)
            for choice in range(self.top):
                if choice in measured:
                    table[gene, choice] = measured[choice]
                    continue
                below = [c for c in measured if c < choice]
                if below:
                    reference = max(below)
                    shift = math.log2(choices[choice]) - math.log2(choices[reference])
                    table[gene, choice] = measured[reference] * 4.0 ** (-2.0 * shift)
        return table

    # -- the surrogate ---------------------------------------------------------------------
    def _features(
        self, genes: np.ndarray, table: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(inputs of the process, additive prediction) for gene vectors (n, G)."""
        if table is None:
            onehot = np.zeros((len(genes), genes.shape[1] * (self.top + 1)))
            for gene in range(genes.shape[1]):
                onehot[np.arange(len(genes)), gene * (self.top + 1) + genes[:, gene]] = 1.0
            return onehot, np.zeros(len(genes))
        sensitivity = table[np.arange(genes.shape[1]), genes]  # (n, G)
        additive = sensitivity.sum(axis=1)
        return np.column_stack([sensitivity, additive]), additive

    def _training_set(self) -> list[Outcome]:
        """At most ``max_points`` measurements: the all-highest assignment, the
        probes and the uniform baselines (the additive model's anchors), then
        whole non-dominated ranks, best first (the last one cut by error)."""
        from mohaq.search.pareto import non_dominated_sort

        limit = self.options.max_points  # type: ignore[attr-defined]
        outcomes = list(self.observed.values())
        if len(outcomes) <= limit:
            return outcomes
        anchors = [
            i for i, o in enumerate(outcomes) if o.genes in self.probe_set or len(set(o.genes)) == 1
        ][:limit]
        chosen = set(anchors)
        rest = [i for i in range(len(outcomes)) if i not in chosen]
        for rank in non_dominated_sort([outcomes[i].losses for i in rest]):
            room = limit - len(chosen)
            if room <= 0:
                break
            members = sorted((rest[k] for k in rank), key=lambda i: (self._error(outcomes[i]), i))
            chosen.update(members[:room])
        return [outcomes[i] for i in sorted(chosen)]

    def _fit(self) -> None:
        if self._model_size == len(self.observed):
            return
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        options: Surrogate = self.options  # type: ignore[assignment]
        table = self._sensitivities()
        outcomes = self._training_set()
        genes = np.asarray([o.genes for o in outcomes], dtype=int)
        errors = np.asarray([self._error(o) for o in outcomes])
        features, additive = self._features(genes, table)
        base = 0.0
        if table is not None:
            base = self._error(self.observed[(self.top,) * self.context.num_genes])
        scale = features.std(axis=0) + 1e-9
        noise = np.asarray(
            [(FULL_FIDELITY_NOISE / max(o.fidelity, 0.05) ** 0.5) ** 2 for o in outcomes]
        )
        target = errors - base - additive
        grown = len(self.observed) >= (1.0 + options.refit_growth) * self._kernel_size
        # The features change meaning when the probes complete (one-hot genes
        # before, sensitivities after): a kernel learned on the other kind is stale.
        stale = self._kernel is not None and self._kernel_onehot != (table is None)
        if self._kernel is None or grown or stale:
            kernel = ConstantKernel(1.0, (1e-4, 1e3)) * RBF(1.0, (1e-2, 1e3)) + WhiteKernel(
                1e-4, (1e-8, 1e-1)
            )
            model = GaussianProcessRegressor(
                kernel,
                alpha=noise,
                normalize_y=True,
                n_restarts_optimizer=options.restarts,
                # Seeded by what it learns from, so a resumed search refits identically.
                random_state=(self.context.seed * 1_000_003 + len(self.observed)) % 2**31,
            )
        else:
            model = GaussianProcessRegressor(
                self._kernel, alpha=noise, normalize_y=True, optimizer=None
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features / scale, target)
        if model.optimizer is not None:
            self._kernel, self._kernel_size = model.kernel_, len(self.observed)
            self._kernel_onehot = table is None
        self._model = (model, table, scale, base)
        self._model_size = len(self.observed)

    def predict(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the error of gene vectors (n, G)."""
        self._fit()
        model, table, scale, base = self._model
        features, additive = self._features(genes, table)
        mean, std = model.predict(features / scale, return_std=True)
        return base + additive + mean, std

    # -- candidates ------------------------------------------------------------------------
    def _front(self) -> list[Outcome]:
        """Measured, feasible, full-fidelity, non-dominated outcomes."""
        from mohaq.search.pareto import pareto_indices

        usable = [o for o in self.observed.values() if o.feasible and o.fidelity >= 1.0]
        return [usable[i] for i in pareto_indices([o.losses for o in usable])]

    def _descent_paths(self, table: np.ndarray, paths: int = 3) -> list[Genes]:
        """From the all-highest assignment, lower one gene at a time: the step
        with the smallest predicted error increase per unit of cost saved
        (randomized for the extra paths)."""
        problem = self.context.problem
        found: list[Genes] = []
        spans = None
        for path in range(paths):
            current = [self.top] * self.context.num_genes
            while True:
                start = np.asarray(problem.cost_losses(tuple(current)))
                steps = []
                for gene in range(len(current)):
                    if current[gene] == 0:
                        continue
                    lowered = list(current)
                    lowered[gene] -= 1
                    saving = start - np.asarray(problem.cost_losses(tuple(lowered)))
                    if spans is None:
                        spans = np.abs(start) + 1e-12
                    gain = float((saving / spans).sum())
                    cost = table[gene, lowered[gene]] - table[gene, current[gene]]
                    noise = 1.0 if path == 0 else float(self.rng.lognormal(0.0, 0.5))
                    steps.append(((max(cost, 1e-6) * noise) / max(gain, 1e-9), gene))
                if not steps:
                    break
                _, gene = min(steps)
                current[gene] -= 1
                found.append(tuple(current))
        return found

    def _pool(self, exclude: set[Genes]) -> list[Genes]:
        options: Surrogate = self.options  # type: ignore[assignment]
        problem = self.context.problem
        candidates: dict[Genes, None] = {}
        if self.paths is None and self._sensitivities() is not None:
            self.paths = self._descent_paths(self._sensitivities())
        for genes in self.paths or []:
            candidates[genes] = None
        for outcome in self._front():
            for gene in range(self.context.num_genes):
                for step in (-1, 1, -2):
                    value = outcome.genes[gene] + step
                    if 0 <= value <= self.top:
                        neighbour = list(outcome.genes)
                        neighbour[gene] = value
                        candidates[tuple(neighbour)] = None
        wanted_random = max(
            int(options.random_candidates * options.pool), options.pool - len(candidates)
        )
        for _ in range(wanted_random):
            candidates[as_genes(self.rng.integers(self.top + 1, size=self.context.num_genes))] = (
                None
            )
        pool = []
        for genes in candidates:
            if not problem.is_feasible(genes):
                repaired = problem.repair(genes)
                if repaired is None:
                    continue
                genes = repaired
            if genes not in self.observed and genes not in self.pending and genes not in exclude:
                pool.append(genes)
        return list(dict.fromkeys(pool))[: options.pool]

    def _choose(self, count: int, exclude: set[Genes]) -> list[Genes]:
        if len(self.observed) < 3:
            return self._random(count, exclude)
        pool = self._pool(exclude)
        if not pool:
            return self._random(count, exclude)
        genes = np.asarray(pool, dtype=int)
        mean, std = self.predict(genes)
        problem = self.context.problem
        costs = np.asarray([problem.cost_losses(g) for g in pool])
        reference = np.asarray(self.context.reference)
        order = [self.error_index] + [i for i in range(len(reference)) if i != self.error_index]
        reference = reference[order]
        front = [np.asarray(o.losses)[order] for o in self._front()]
        if costs.shape[1] > 1 and len(pool) > SCREENED:
            # Several cost objectives make the exact expectation slower: keep the
            # candidates most likely to be non-dominated by the measured front.
            keep = np.argsort(-_non_domination_probability(mean, std, costs, front))[:SCREENED]
            pool = [pool[i] for i in keep]
            mean, std, costs = mean[keep], std[keep], costs[keep]
        chosen: list[Genes] = []
        available = np.ones(len(pool), dtype=bool)
        for _ in range(min(count, len(pool))):
            points = np.asarray(front) if front else np.zeros((0, len(reference)))
            scores = expected_hvi(mean, std, costs, points, reference)
            scores[~available] = -np.inf
            best = int(np.argmax(scores))
            if scores[best] <= 0:
                # Nothing is expected to improve the front: explore where the
                # surrogate is least sure among the cheapest candidates.
                scores = np.where(available, std, -np.inf)
                best = int(np.argmax(scores))
            chosen.append(pool[best])
            available[best] = False
            front.append(np.concatenate([[mean[best]], costs[best]]))  # kriging believer
        return chosen

    def _random(self, count: int, exclude: set[Genes]) -> list[Genes]:
        problem = self.context.problem
        found: list[Genes] = []
        for _ in range(50 * count):
            if len(found) == count:
                break
            genes = as_genes(self.rng.integers(self.top + 1, size=self.context.num_genes))
            if not problem.is_feasible(genes):
                genes = problem.repair(genes)  # type: ignore[assignment]
            if genes and genes not in self.observed and genes not in exclude and genes not in found:
                found.append(genes)
        return found

    # -- ask/tell --------------------------------------------------------------------------
    def ask(self, count: int) -> list[Genes]:
        asked: list[Genes] = []
        while self.probes and len(asked) < count:
            probe = self.probes.pop(0)
            if probe not in self.observed and probe not in self.pending:
                asked.append(probe)
        if len(asked) < count and not self.probes:
            from threadpoolctl import threadpool_limits

            # Small matrices: BLAS threads only contend (10x slower on a busy machine).
            with threadpool_limits(limits=1):
                asked += self._choose(count - len(asked), set(asked))
        self.pending.update(asked)
        return asked

    def tell(self, genes: Genes, outcome: Outcome) -> None:
        self.pending.discard(genes)
        self.observed[outcome.genes] = outcome
        if genes != outcome.genes:
            self.pending.discard(outcome.genes)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "observed": dict(self.observed),
            "pending": sorted(self.pending),
            "probes": list(self.probes),
            "paths": self.paths,
            "kernel": self._kernel,
            "kernel_size": self._kernel_size,
            "kernel_onehot": self._kernel_onehot,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.observed = dict(state["observed"])
        # Asked but never told before the save: forgotten (proposed again if still best).
        self.pending = set()
        self.probes = list(state["probes"]) + [
            g for g in state["pending"] if g in self.probe_set and g not in self.observed
        ]
        self.paths = state["paths"]
        self._model, self._model_size = None, -1
        self._kernel = state.get("kernel")
        self._kernel_size = state.get("kernel_size", 0)
        self._kernel_onehot = state.get("kernel_onehot", False)
