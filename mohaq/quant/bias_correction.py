"""Bias correction of quantized weights (Nagel et al., "Data-free quantization", 2019).

Quantizing a weight shifts the mean of its product's output by
``delta = (W_q - W) E[x]``, where ``E[x]`` is the mean of the product's
float input over the calibration data. Subtracting ``delta`` from the bias of
those outputs removes the shift. (The shift is part of the output error that
AdaRound minimizes too: ``E||(W_q - W) x||^2`` = the covariance term + ``||delta||^2``.)

Corrections go where a layer already has a bias for the product's outputs;
outputs without one are left as they are (adding a bias would change the
model's structure and its fixed-precision memory):

- :class:`~mohaq.models.quant_linear.QuantLinear` with a bias (the output layer):
  every output. Projections have no bias.
- :class:`~mohaq.models.sru.SRULayer`: the forget and reset gate rows of the
  product, through ``b_forget`` and ``b_reset``; the candidate and highway
  rows have no bias in the SRU equations.
- GRU/LSTM at operator granularity: ``w_ih`` rows through ``bias_ih`` and
  ``w_hh`` rows through ``bias_hh``.

The float biases are kept; :meth:`BiasCorrector.apply` writes float bias
minus the current corrections, :meth:`BiasCorrector.restore` the float biases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mohaq.quant.quantizer import FakeQuantizer


@dataclass(frozen=True)
class BiasSlot:
    """Where a weight point's output rows find a bias.

    Attributes:
        bias: the bias parameter.
        rows: indices of the weight's output rows it corrects (``(n,)``).
        entries: the bias entries (flat indices) each of those rows adds to.
    """

    bias: nn.Parameter
    rows: Tensor
    entries: Tensor


def _owner_slots(owner: nn.Module, quantizer_name: str) -> list[BiasSlot]:
    # Imported here: the models import mohaq.quant, so mohaq.quant cannot import
    # them at module level.
    from mohaq.models.quant_linear import QuantLinear
    from mohaq.models.recurrent_base import StepwiseRecurrentLayer
    from mohaq.models.sru import SRULayer

    if isinstance(owner, QuantLinear):
        if owner.bias is None:
            return []
        index = torch.arange(owner.out_features)
        return [BiasSlot(owner.bias, index, index)]
    if isinstance(owner, SRULayer):
        d, m, h = owner.directions, owner.num_matrices, owner.hidden_size
        rows = torch.arange(d * m * h).view(d, m, h)
        entries = torch.arange(d * h).view(d, h)
        return [
            BiasSlot(owner.b_forget, rows[:, 1].reshape(-1), entries.reshape(-1)),
            BiasSlot(owner.b_reset, rows[:, 2].reshape(-1), entries.reshape(-1)),
        ]
    if isinstance(owner, StepwiseRecurrentLayer) and owner.granularity == "operator":
        bias = owner.bias_ih if quantizer_name == "w_ih_quant" else owner.bias_hh
        index = torch.arange(bias.numel())
        return [BiasSlot(bias, index, index)]
    return []


def bias_slots(model: nn.Module) -> dict[str, list[BiasSlot]]:
    """Weight point name -> the biases its outputs can be corrected through."""
    slots: dict[str, list[BiasSlot]] = {}
    for owner in model.modules():
        for child_name, child in owner.named_children():
            if isinstance(child, FakeQuantizer) and child.role == "weight" and child.point_name:
                found = _owner_slots(owner, child_name)
                if found:
                    slots[child.point_name] = found
    return slots


class BiasCorrector:
    """Writes ``float bias - (W_q - W) E[x]`` into the biases of quantized weights.

    Args:
        model: the model whose biases are corrected in place.
        means: weight point name -> ``E[x]`` of its product's float input.
    """

    def __init__(self, model: nn.Module, means: Mapping[str, Tensor]) -> None:
        self.slots = {name: s for name, s in bias_slots(model).items() if name in means}
        self.means = dict(means)
        self._float: dict[int, tuple[nn.Parameter, Tensor]] = {}
        for slots in self.slots.values():
            for slot in slots:
                self._float.setdefault(id(slot.bias), (slot.bias, slot.bias.detach().clone()))

    @property
    def points(self) -> tuple[str, ...]:
        """The weight points that have a bias to correct."""
        return tuple(self.slots)

    def corrected_rows(self) -> dict[str, int]:
        """Weight point -> how many of its output rows a bias corrects."""
        return {name: sum(len(s.rows) for s in slots) for name, slots in self.slots.items()}

    def shift(self, point: str, weight: Tensor, quantized: Tensor) -> Tensor:
        """``(W_q - W) E[x]``: the mean output shift of ``point``, ``(out,)``."""
        mean = self.means[point].to(dtype=torch.float64, device=weight.device)
        return ((quantized.detach() - weight.detach()).double() @ mean).to(weight.dtype)

    @torch.no_grad()
    def apply(self, shifts: Mapping[str, Tensor]) -> None:
        """Sets every bias to its float value minus the shifts of ``shifts``' points
        (points left out are not corrected)."""
        corrected = {key: value.clone() for key, (_, value) in self._float.items()}
        for point, shift in shifts.items():
            for slot in self.slots.get(point, ()):
                flat = corrected[id(slot.bias)].view(-1)
                flat.index_add_(0, slot.entries, -shift[slot.rows].to(flat.dtype))
        for key, (parameter, _) in self._float.items():
            if not torch.equal(parameter, corrected[key]):
                parameter.copy_(corrected[key])

    @torch.no_grad()
    def restore(self) -> None:
        """Puts the float biases back."""
        for parameter, value in self._float.values():
            if not torch.equal(parameter, value):
                parameter.copy_(value)
