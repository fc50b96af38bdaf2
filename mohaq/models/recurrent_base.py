"""Shared plumbing of the step-by-step recurrent layers (GRU, LSTM).

The input product runs over all steps at once; only the recurrent product and
the gates run per step. Both directions step together: the backward
direction's inputs are reversed within each sequence's length first, so one
loop serves both, and padded steps carry the state unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mohaq.models.sequence import reverse_within_lengths, step_mask
from mohaq.quant.quantizer import FakeQuantizer


class StepwiseRecurrentLayer(nn.Module):
    """Base of GRU/LSTM layers: one weight ``(D*G*H, in + H)`` = [W_ih | W_hh] per gate row.

    Args:
        input_size: input features.
        hidden_size: units per direction.
        gates: gate blocks per direction (GRU 3, LSTM 4).
        layer: the layer's point prefix.
        bidirectional: two directions.
    """

    def __init__(
        self, input_size: int, hidden_size: int, gates: int, *, layer: str, bidirectional: bool
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.gates, self.layer = (
            input_size, hidden_size, gates, layer,
        )  # fmt: skip
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions
        rows = self.directions * gates * hidden_size
        self.weight = nn.Parameter(torch.empty(rows, input_size + hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        self._observed: dict[int, tuple[FakeQuantizer, list[Tensor]]] = {}
        bound = 1.0 / math.sqrt(hidden_size)
        for parameter in (self.weight, self.bias_ih, self.bias_hh):
            nn.init.uniform_(parameter, -bound, bound)

    def step_quant(self, quantizer: FakeQuantizer, value: Tensor) -> Tensor:
        """Quantizes a per-step tensor.

        While calibrating, a quantizer records one histogram per call and treats
        each call as one utterance; per-step values are therefore collected and
        observed once per forward (:meth:`flush_observed`).
        """
        if quantizer.observing:
            self._observed.setdefault(id(quantizer), (quantizer, []))[1].append(value.detach())
            return value
        return quantizer(value)

    def flush_observed(self) -> None:
        for quantizer, values in self._observed.values():
            quantizer(torch.stack(values))
        self._observed = {}

    def per_direction(self, matrix: Tensor) -> Tensor:
        """``(D*G*H, K)`` -> ``(D, G*H, K)``."""
        return matrix.view(self.directions, self.gates * self.hidden_size, -1)

    def input_product(self, x: Tensor, w_ih: Tensor, lengths: Tensor) -> Tensor:
        """All steps' input products, time-major ``(T, B, D, G*H)``, direction 1 reversed."""
        batch, steps, _ = x.shape
        u = (x @ w_ih.t()).view(batch, steps, self.directions, self.gates * self.hidden_size)
        if self.directions == 2:
            u = torch.stack((u[:, :, 0], reverse_within_lengths(u[:, :, 1], lengths)), dim=2)
        return u.transpose(0, 1)

    def finish(self, outputs: list[Tensor], lengths: Tensor) -> Tensor:
        """Stacks per-step ``(B, D, H)`` outputs into ``(B, T, D*H)`` in original time order."""
        self.flush_observed()
        h = torch.stack(outputs, dim=1)
        if self.directions == 2:
            h = torch.stack((h[:, :, 0], reverse_within_lengths(h[:, :, 1], lengths)), dim=2)
        batch, steps = h.shape[:2]
        return h.reshape(batch, steps, self.output_size)

    def masks(self, lengths: Tensor, steps: int, dtype: torch.dtype) -> Tensor:
        """``(T, B, 1, 1)`` step masks."""
        return step_mask(lengths, steps, dtype).transpose(0, 1)[:, :, None, None]

    def fixed_params(self) -> int:
        return self.bias_ih.numel() + self.bias_hh.numel()
