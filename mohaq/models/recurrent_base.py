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
from mohaq.quant.clipping import ClippingMethod
from mohaq.quant.points import QuantPoint
from mohaq.quant.quantizer import FakeQuantizer

GRANULARITIES: tuple[str, ...] = ("layer", "operator")
# Recurrent state name -> the attribute of its quantizer.
_STATE_ATTRIBUTES = {"h": "hidden_quant", "c": "cell_quant"}


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

    def init_quantizers(
        self,
        *,
        granularity: str,
        operators: tuple[str, ...],
        states: tuple[str, ...],
        weight_clipping: ClippingMethod,
        activation_clipping: ClippingMethod,
    ) -> None:
        """Creates the layer's quantizers.

        ``"layer"``: one weight point over [W_ih | W_hh] and one input point;
        the states are fixed-precision extras. ``"operator"``: W_ih, W_hh, the
        input ``x``, each state and each operator output are points.

        Raises:
            ValueError: on an unknown granularity.
        """
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be 'layer' or 'operator', got {granularity!r}")
        layer, act = self.layer, activation_clipping
        self.granularity, self.operators, self.states = granularity, operators, states
        self.bias_quant = FakeQuantizer(None, role="fixed", clipping="minmax")
        if granularity == "layer":
            self.weight_quant = FakeQuantizer(
                f"{layer}.weight", role="weight", clipping=weight_clipping
            )
            self.input_quant = FakeQuantizer(f"{layer}.input", role="activation", clipping=act)
            for state in states:
                setattr(
                    self,
                    _STATE_ATTRIBUTES[state],
                    FakeQuantizer(None, role="state", clipping="minmax"),
                )
            return
        self.w_ih_quant = FakeQuantizer(f"{layer}.w_ih", role="weight", clipping=weight_clipping)
        self.w_hh_quant = FakeQuantizer(f"{layer}.w_hh", role="weight", clipping=weight_clipping)
        self.input_quant = FakeQuantizer(f"{layer}.x", role="activation", clipping=act)
        for state in states:
            quantizer = FakeQuantizer(f"{layer}.{state}", role="state", clipping=act)
            setattr(self, _STATE_ATTRIBUTES[state], quantizer)
        self.operator_quants = nn.ModuleDict(
            {
                op: FakeQuantizer(f"{layer}.{op}", role="activation", clipping=act)
                for op in operators
            }
        )

    def quantized_weights(self) -> tuple[Tensor, Tensor]:
        """(W_ih, W_hh) through their quantizers, both ``(D*G*H, ...)``."""
        if self.granularity == "layer":
            weight = self.weight_quant(self.weight)
            return weight[:, : self.input_size], weight[:, self.input_size :]
        return (
            self.w_ih_quant(self.weight[:, : self.input_size]),
            self.w_hh_quant(self.weight[:, self.input_size :]),
        )

    def op(self, name: str, value: Tensor) -> Tensor:
        """Quantizes an operator's output at operator granularity; identity otherwise."""
        if self.granularity == "operator":
            return self.step_quant(self.operator_quants[name], value)
        return value

    def quant_points(self) -> tuple[QuantPoint, ...]:
        d, g = self.directions, self.gates * self.hidden_size
        hsz, ins, layer = self.hidden_size, self.input_size, self.layer
        if self.granularity == "layer":
            params = self.weight.numel()
            return (
                QuantPoint(f"{layer}.input", "activation", layer),
                QuantPoint(f"{layer}.weight", "weight", layer, params=params, macs_per_frame=params,
                           in_features=ins + hsz, out_features=d * g, input_point=f"{layer}.input"),
            )  # fmt: skip
        points = [QuantPoint(f"{layer}.x", "activation", layer)]
        points += [QuantPoint(f"{layer}.{state}", "state", layer) for state in self.states]
        points += [
            QuantPoint(f"{layer}.w_ih", "weight", layer, params=d * g * ins, macs_per_frame=d * g * ins,
                       in_features=ins, out_features=d * g, input_point=f"{layer}.x"),
            QuantPoint(f"{layer}.w_hh", "weight", layer, params=d * g * hsz, macs_per_frame=d * g * hsz,
                       in_features=hsz, out_features=d * g, input_point=f"{layer}.h"),
        ]  # fmt: skip
        points += [QuantPoint(f"{layer}.{op}", "operator", layer) for op in self.operators]
        return tuple(points)

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
