"""Which precision to lower first: an additive error model learned from outcomes.

HAQ lowers precisions until a policy fits its budget. Lowering the gene that
saves the most cost per unit of error it adds needs the error each step adds,
its *sensitivity*. Probing every gene at every precision would cost
``genes x (choices - 1)`` evaluations, a large share of a 100-200 evaluation
search, so the sensitivity is learned from the outcomes the search observes
anyway (uniform baselines, the agent's episodes): the error is modelled as
additive over genes (HAWQ's observation that single-layer error increases
roughly add up at moderate precisions),

    error(genes) ~ e0 + sum_g c[g, genes[g]],   c[g, highest choice] = 0,

fitted by ridge least squares (so with few observations the increments shrink
to zero). A step's sensitivity is the increase the model predicts, floored by
a small prior proportional to the quantization noise power 4^-bits that the
step adds: before any data, high precisions are lowered first; with data, the
genes whose lowering hurt least are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mohaq.search.proposers.base import Genes

#: Weight of the noise-power prior against the fitted increases (errors are fractions).
PRIOR_SCALE = 1e-3


class AdditiveErrorModel:
    """Ridge fit of per-gene, per-choice error increments (see the module docstring).

    Args:
        num_genes: genes of the search space.
        choices: the bit choices, ascending.
        ridge: L2 penalty on the increments (the intercept is not penalised).
    """

    def __init__(self, num_genes: int, choices: Sequence[int], *, ridge: float = 1e-2) -> None:
        self.num_genes = num_genes
        self.choices = tuple(int(b) for b in choices)
        self.ridge = ridge
        self.genes: list[Genes] = []
        self.errors: list[float] = []
        self._increments: np.ndarray | None = None
        top = len(self.choices) - 1
        noise = np.array([4.0 ** -(b - self.choices[0]) for b in self.choices])
        self._prior = PRIOR_SCALE * (noise - noise[top])  # noise added over the highest choice

    @property
    def version(self) -> int:
        """Changes whenever an observation is added (the fit may change)."""
        return len(self.errors)

    def observe(self, genes: Genes, error: float) -> None:
        self.genes.append(tuple(genes))
        self.errors.append(float(error))
        self._increments = None

    def increments(self) -> np.ndarray:
        """``c[g, k]``: the modelled error increase of choice k at gene g over the
        highest choice (zeros before any observation)."""
        if self._increments is None:
            self._increments = self._fit()
        return self._increments

    def _fit(self) -> np.ndarray:
        levels = len(self.choices) - 1  # the highest choice is the reference
        increments = np.zeros((self.num_genes, len(self.choices)))
        if not self.genes or levels == 0:
            return increments
        rows = len(self.genes)
        features = np.zeros((rows, self.num_genes * levels))
        for i, genes in enumerate(self.genes):
            for g, k in enumerate(genes):
                if k < levels:
                    features[i, g * levels + k] = 1.0
        targets = np.asarray(self.errors)
        design = np.hstack([np.ones((rows, 1)), features])
        penalty = np.sqrt(self.ridge) * np.eye(design.shape[1])[1:]
        solution, *_ = np.linalg.lstsq(
            np.vstack([design, penalty]),
            np.concatenate([targets, np.zeros(penalty.shape[0])]),
            rcond=None,
        )
        increments[:, :levels] = solution[1:].reshape(self.num_genes, levels)
        return increments

    def predict(self, genes: Genes) -> float:
        """The modelled error of ``genes`` minus the intercept."""
        c = self.increments()
        return float(sum(c[g, k] for g, k in enumerate(genes)))

    def step_cost(self, genes: Genes, gene: int, choice: int) -> float:
        """The error that setting ``gene`` to ``choice`` is expected to add, > 0:
        the fitted increase (negative increases count as none) plus the prior."""
        c = self.increments()
        current = genes[gene]
        fitted = max(0.0, c[gene, choice] - c[gene, current])
        prior = max(0.0, self._prior[choice] - self._prior[current])
        return fitted + prior + PRIOR_SCALE**2

    def state_dict(self) -> dict[str, object]:
        return {"genes": list(self.genes), "errors": list(self.errors)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.genes = [tuple(g) for g in state["genes"]]  # type: ignore[attr-defined]
        self.errors = [float(e) for e in state["errors"]]  # type: ignore[attr-defined]
        self._increments = None
