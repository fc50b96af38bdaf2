"""A quantizable GRU layer, equal to torch.nn.GRU with quantization off.

torch's equations (gate order r, z, n)::

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

Two granularities of quantization points:

- ``"layer"`` (MOHAQ): ``<layer>.weight`` (W_ih and W_hh of both directions)
  and ``<layer>.input`` (x); the hidden state fed back to W_hh and the biases
  are fixed-precision extras.
- ``"operator"`` (the GRU genetic-algorithm work, Miccini et al.): every
  operand and result inside the cell is its own point: the weights ``w_ih``
  and ``w_hh``, their inputs ``x`` and ``h`` (the hidden state), the products'
  outputs ``ih`` and ``hh``, the gate activations ``r``, ``z``, ``n``, the
  element-wise products ``rhn`` = r * (W_hn h + b_hn), ``zh`` = z * h and
  ``zn`` = (1 - z) * n, whose sum is the new hidden state (quantized at ``h``
  when it is fed back).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mohaq.models.recurrent_base import StepwiseRecurrentLayer
from mohaq.quant.clipping import ClippingMethod

Granularity = Literal["layer", "operator"]
GRU_OPERATORS: tuple[str, ...] = ("ih", "hh", "r", "z", "n", "rhn", "zh", "zn")


class GRULayer(StepwiseRecurrentLayer):
    """One (bi)directional GRU layer with named quantization points."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        layer: str,
        bidirectional: bool = True,
        granularity: Granularity = "layer",
        weight_clipping: ClippingMethod = "mmse",
        activation_clipping: ClippingMethod = "mmse",
    ) -> None:
        super().__init__(input_size, hidden_size, 3, layer=layer, bidirectional=bidirectional)
        self.init_quantizers(
            granularity=granularity, operators=GRU_OPERATORS, states=("h",),
            weight_clipping=weight_clipping, activation_clipping=activation_clipping,
        )  # fmt: skip

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        lengths = lengths.to(x.device)
        w_ih, w_hh = self.quantized_weights()
        w_hh = self.per_direction(w_hh)
        b_ih = self.bias_quant(self.bias_ih).view(self.directions, -1)
        b_hh = self.bias_quant(self.bias_hh).view(self.directions, -1)
        ih_all = self.input_product(self.input_quant(x), w_ih, lengths) + b_ih
        ih_all = self.op("ih", ih_all)
        masks = self.masks(lengths, steps, x.dtype)
        h = x.new_zeros(batch, self.directions, self.hidden_size)
        outputs = []
        hidden = self.hidden_size
        for t in range(steps):
            h_in = self.step_quant(self.hidden_quant, h)
            hh = self.op("hh", torch.einsum("bdk,dgk->bdg", h_in, w_hh) + b_hh)
            ih = ih_all[t]
            r = self.op("r", torch.sigmoid(ih[..., :hidden] + hh[..., :hidden]))
            z = self.op(
                "z", torch.sigmoid(ih[..., hidden : 2 * hidden] + hh[..., hidden : 2 * hidden])
            )
            rhn = self.op("rhn", r * hh[..., 2 * hidden :])
            n = self.op("n", torch.tanh(ih[..., 2 * hidden :] + rhn))
            h_new = self.op("zn", (1.0 - z) * n) + self.op("zh", z * h_in)
            m = masks[t]
            h = m * h_new + (1.0 - m) * h
            outputs.append(m * h)
        return self.finish(outputs, lengths)
