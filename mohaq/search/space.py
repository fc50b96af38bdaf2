"""The search space: genes over a workload's quantization points.

A gene is a group of points that always share one precision. Normally every
point is its own gene; on a platform whose datapath runs a matrix product at
one precision for both operands (SiLago), a weight and its input activation
form one gene, so the 16 points of MOHAQ's 4-layer SRU become 8 genes.

A gene vector holds, per gene, an index into the sorted bit choices; the
algorithms search over these vectors and the space maps them to bit
assignments and back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload

#: MOHAQ's bit choices; used when the caller names none.
DEFAULT_BIT_CHOICES: tuple[int, ...] = (2, 4, 8, 16)


class SearchSpaceError(ValueError):
    """A search space cannot be built from the requested bit choices and platform."""


@dataclass(frozen=True)
class Gene:
    """Points that always take the same precision.

    Attributes:
        name: the gene's name (its layer for a shared gene, else its point).
        points: the point names it sets, in workload order.
    """

    name: str
    points: tuple[str, ...]


def _shared_groups(workload: Workload) -> list[tuple[str, ...]]:
    """Groups each weight with its input activation (union-find, so an activation
    feeding several weights ties them all together)."""
    parent = {name: name for name in workload.names}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for point in workload.points:
        if point.input_point is not None:
            parent[find(point.input_point)] = find(point.name)
    groups: dict[str, list[str]] = {}
    for name in workload.names:
        groups.setdefault(find(name), []).append(name)
    # Order genes by their first point in the workload.
    return sorted((tuple(g) for g in groups.values()), key=lambda g: workload.names.index(g[0]))


class SearchSpace:
    """Genes, bit choices and the gene <-> bit assignment mapping.

    Args:
        workload: the model's quantization points.
        bit_choices: requested precisions; None takes MOHAQ's 2/4/8/16 filtered
            by the platform's ``allowed_bits``.
        allowed_bits: precisions the platform can run (None: any).
        shared_layer_precision: a weight and its input activation share one gene.

    Raises:
        SearchSpaceError: if a requested choice is not allowed on the platform
            (the message lists the allowed ones) or no choice is left.
    """

    def __init__(
        self,
        workload: Workload,
        bit_choices: Sequence[int] | None = None,
        *,
        allowed_bits: Iterable[int] | None = None,
        shared_layer_precision: bool = False,
    ) -> None:
        if not workload.points:
            raise SearchSpaceError("the workload has no quantization points to search")
        allowed = None if allowed_bits is None else sorted({int(b) for b in allowed_bits})
        if bit_choices is None:
            choices = [b for b in DEFAULT_BIT_CHOICES if allowed is None or b in allowed]
        else:
            requested = list(bit_choices)
            for bits in requested:
                if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
                    raise SearchSpaceError(f"bit_choices must be integers, got {bits!r}")
                if not 2 <= bits <= 16:
                    raise SearchSpaceError(f"bit choice {bits} is out of range; allowed: 2 to 16")
            if allowed is not None:
                refused = sorted({int(b) for b in requested} - set(allowed))
                if refused:
                    raise SearchSpaceError(
                        f"bit_choices {refused} are not supported by the platform; "
                        f"allowed bits: {allowed}"
                    )
            choices = sorted({int(b) for b in requested})
        if not choices:
            raise SearchSpaceError(
                f"no bit choice left: the platform allows {allowed}, none of MOHAQ's "
                f"{list(DEFAULT_BIT_CHOICES)}; give bit_choices from {allowed}"
                if bit_choices is None
                else f"bit_choices is empty; give precisions from 2 to 16 bits (platform allows {allowed})"
            )
        self.workload = workload
        self.choices: tuple[int, ...] = tuple(sorted(set(choices)))
        self.shared_layer_precision = bool(shared_layer_precision)
        if self.shared_layer_precision:
            groups = _shared_groups(workload)
            self.genes = tuple(
                Gene(workload.point(g[0]).layer if len(g) > 1 else g[0], g) for g in groups
            )
        else:
            self.genes = tuple(Gene(name, (name,)) for name in workload.names)
        self._gene_of = {p: i for i, gene in enumerate(self.genes) for p in gene.points}

    # -- sizes --------------------------------------------------------------------------
    @property
    def num_genes(self) -> int:
        return len(self.genes)

    @property
    def size(self) -> int:
        """Number of distinct assignments (K ** G)."""
        return len(self.choices) ** self.num_genes

    # -- conversions --------------------------------------------------------------------
    def genes_from_value(self, value: Sequence[float] | np.ndarray) -> tuple[int, ...]:
        """Choice indices from an optimizer value (rounded and clipped into range)."""
        array = np.asarray(value, dtype=float).reshape(-1)
        if array.shape[0] != self.num_genes:
            raise ValueError(f"expected {self.num_genes} genes, got {array.shape[0]}")
        indices = np.clip(np.rint(array), 0, len(self.choices) - 1).astype(int)
        return tuple(int(i) for i in indices)

    def decode(self, value: Sequence[float] | np.ndarray) -> BitAssignment:
        """Bit assignment of a gene vector (choice indices)."""
        genes = self.genes_from_value(value)
        bits: dict[str, int] = {}
        for gene, index in zip(self.genes, genes, strict=True):
            for point in gene.points:
                bits[point] = self.choices[index]
        return BitAssignment({name: bits[name] for name in self.workload.names})

    def encode(self, assignment: BitAssignment) -> tuple[int, ...]:
        """Choice indices of an assignment.

        Raises:
            SearchSpaceError: if a point is missing, a precision is not a choice,
                or the points of a shared gene disagree.
        """
        indices: list[int] = []
        for gene in self.genes:
            widths = {assignment.bits.get(point) for point in gene.points}
            if None in widths:
                missing = [p for p in gene.points if p not in assignment.bits]
                raise SearchSpaceError(f"assignment leaves point(s) {missing} unset")
            if len(widths) > 1:
                raise SearchSpaceError(
                    f"points {list(gene.points)} share one precision on this platform but "
                    f"the assignment gives them {sorted(widths)}"
                )
            (width,) = widths
            if width not in self.choices:
                raise SearchSpaceError(
                    f"{width} bits at gene {gene.name!r} is not a choice; choices: {list(self.choices)}"
                )
            indices.append(self.choices.index(width))
        return tuple(indices)

    def uniform(self, bits: int) -> BitAssignment:
        return BitAssignment.uniform(self.workload.names, bits)

    def describe(self) -> dict[str, object]:
        """JSON-able description, stored with a run so a resume can check it."""
        return {
            "choices": list(self.choices),
            "shared_layer_precision": self.shared_layer_precision,
            "genes": [[gene.name, list(gene.points)] for gene in self.genes],
        }
