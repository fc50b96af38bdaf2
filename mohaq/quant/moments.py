"""First and second moments of the inputs of a model's matrix products.

AdaRound needs ``E[x x^T]`` of each product's input and bias correction needs
``E[x]``. Both are collected in the float calibration pass: a forward
pre-hook on each activation quantizer sees the tensor the quantizer receives,
which is the product's other operand (a weight point names it as its
``input_point``). Sums are kept in float64, over every frame (all leading
dimensions), so the moments do not depend on how utterances were batched as
long as batches hold no padding (calibration runs one utterance per batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mohaq.quant.quantizer import FakeQuantizer


@dataclass
class InputMoments:
    """Running sums of the vectors ``x`` (the last dimension) seen at one point.

    Attributes:
        count: vectors seen.
        total: their sum, ``(features,)``, float64.
        gram: the sum of ``x x^T``, ``(features, features)``, float64.
    """

    count: int = 0
    total: Tensor | None = field(default=None, repr=False)
    gram: Tensor | None = field(default=None, repr=False)

    def update(self, x: Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        if self.total is None or self.gram is None:
            self.total = rows.new_zeros(rows.shape[1])
            self.gram = rows.new_zeros(rows.shape[1], rows.shape[1])
        self.total += rows.sum(0)
        self.gram += rows.T @ rows
        self.count += rows.shape[0]

    @property
    def features(self) -> int:
        return 0 if self.total is None else int(self.total.shape[0])

    def _require(self) -> tuple[Tensor, Tensor]:
        if self.count == 0 or self.total is None or self.gram is None:
            raise RuntimeError("no input has been recorded")
        return self.total, self.gram

    def mean(self) -> Tensor:
        """``E[x]``, ``(features,)``, float64."""
        total, _ = self._require()
        return total / self.count

    def second_moment(self) -> Tensor:
        """``E[x x^T]``, ``(features, features)``, float64."""
        _, gram = self._require()
        return gram / self.count


@contextmanager
def recording_inputs(
    named: dict[str, FakeQuantizer], points: Iterable[str]
) -> Iterator[dict[str, InputMoments]]:
    """Records the inputs of the quantizers of ``points`` while the block runs.

    Args:
        named: quantizers by point name (:func:`mohaq.quant.apply.quantizers`).
        points: the point names whose inputs to record.

    Yields:
        Point name -> :class:`InputMoments`, filled as the model runs.

    Raises:
        KeyError: for a point without a quantizer.
    """
    moments: dict[str, InputMoments] = {}
    handles = []
    try:
        for name in points:
            if name not in named:
                raise KeyError(
                    f"no quantizer implements point {name!r}; points: {', '.join(named)}"
                )
            record = moments.setdefault(name, InputMoments())

            def hook(module: nn.Module, args: tuple[Tensor, ...], record=record) -> None:  # noqa: ARG001
                record.update(args[0])

            handles.append(named[name].register_forward_pre_hook(hook))
        yield moments
    finally:
        for handle in handles:
            handle.remove()
