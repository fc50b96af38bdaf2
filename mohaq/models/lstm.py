"""A quantizable LSTM layer, equal to torch.nn.LSTM with quantization off.

torch's equations (gate order i, f, g, o)::

    i, f, o = sigmoid(W_i* x + b_i* + W_h* h + b_h*);  g = tanh(...)
    c' = f * c + i * g;  h' = o * tanh(c')

Points at layer granularity (MOHAQ): ``<layer>.weight`` (W_ih and W_hh of both
directions) and ``<layer>.input``; the hidden and cell states and the biases
are fixed-precision extras. Operator granularity is implemented for the GRU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mohaq.models.recurrent_base import StepwiseRecurrentLayer
from mohaq.quant.clipping import ClippingMethod
from mohaq.quant.points import QuantPoint
from mohaq.quant.quantizer import FakeQuantizer


class LSTMLayer(StepwiseRecurrentLayer):
    """One (bi)directional LSTM layer with named quantization points."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        layer: str,
        bidirectional: bool = True,
        weight_clipping: ClippingMethod = "mmse",
        activation_clipping: ClippingMethod = "mmse",
    ) -> None:
        super().__init__(input_size, hidden_size, 4, layer=layer, bidirectional=bidirectional)
        self.weight_quant = FakeQuantizer(f"{layer}.weight", role="weight", clipping=weight_clipping)
        self.input_quant = FakeQuantizer(
            f"{layer}.input", role="activation", clipping=activation_clipping
        )
        self.bias_quant = FakeQuantizer(None, role="fixed", clipping="minmax")
        self.hidden_quant = FakeQuantizer(None, role="state", clipping="minmax")
        self.cell_quant = FakeQuantizer(None, role="state", clipping="minmax")

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        lengths = lengths.to(x.device)
        weight = self.weight_quant(self.weight)
        w_ih, w_hh = weight[:, : self.input_size], self.per_direction(weight[:, self.input_size :])
        bias = (self.bias_quant(self.bias_ih) + self.bias_quant(self.bias_hh)).view(self.directions, -1)
        ih_all = self.input_product(self.input_quant(x), w_ih, lengths) + bias
        masks = self.masks(lengths, steps, x.dtype)
        h = x.new_zeros(batch, self.directions, self.hidden_size)
        c = torch.zeros_like(h)
        outputs = []
        hsz = self.hidden_size
        for t in range(steps):
            gates = ih_all[t] + torch.einsum("bdk,dgk->bdg", self.step_quant(self.hidden_quant, h), w_hh)
            i = torch.sigmoid(gates[..., :hsz])
            f = torch.sigmoid(gates[..., hsz : 2 * hsz])
            g = torch.tanh(gates[..., 2 * hsz : 3 * hsz])
            o = torch.sigmoid(gates[..., 3 * hsz :])
            c_new = self.step_quant(self.cell_quant, f * c + i * g)
            h_new = o * torch.tanh(c_new)
            m = masks[t]
            c = m * c_new + (1.0 - m) * c
            h = m * h_new + (1.0 - m) * h
            outputs.append(m * h)
        return self.finish(outputs, lengths)

    def quant_points(self) -> tuple[QuantPoint, ...]:
        params = self.weight.numel()
        return (
            QuantPoint(f"{self.layer}.input", "activation", self.layer),
            QuantPoint(f"{self.layer}.weight", "weight", self.layer, params=params,
                       macs_per_frame=params, in_features=self.input_size + self.hidden_size,
                       out_features=self.directions * 4 * self.hidden_size,
                       input_point=f"{self.layer}.input"),
        )  # fmt: skip
