"""A quantizable LSTM layer, equal to torch.nn.LSTM with quantization off.

torch's equations (gate order i, f, g, o)::

    i, f, o = sigmoid(W_i* x + b_i* + W_h* h + b_h*);  g = tanh(...)
    c' = f * c + i * g;  h' = o * tanh(c')

Two granularities of quantization points:

- ``"layer"`` (MOHAQ): ``<layer>.weight`` (W_ih and W_hh of both directions)
  and ``<layer>.input``; the hidden and cell states and the biases are
  fixed-precision extras.
- ``"operator"`` (as for the GRU, after Miccini et al.): the weights ``w_ih``
  and ``w_hh``, their inputs ``x`` and ``h`` (the hidden state fed back), the
  products' outputs ``ih`` and ``hh`` (with their biases), the gate
  activations ``i``, ``f``, ``g``, ``o``, the element-wise products ``fc`` =
  f * c and ``ig`` = i * g, the cell state ``c`` (their sum), ``tanh_c`` and
  ``oc`` = o * tanh(c), the new hidden state (quantized at ``h`` when fed back).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mohaq.models.gru import Granularity
from mohaq.models.recurrent_base import StepwiseRecurrentLayer
from mohaq.quant.clipping import ClippingMethod

LSTM_OPERATORS: tuple[str, ...] = ("ih", "hh", "i", "f", "g", "o", "fc", "ig", "tanh_c", "oc")


class LSTMLayer(StepwiseRecurrentLayer):
    """One (bi)directional LSTM layer with named quantization points.

    Args:
        input_size: input features.
        hidden_size: units per direction.
        layer: the layer's point prefix, e.g. ``"lstm0"``.
        bidirectional: two directions.
        granularity: ``"layer"`` or ``"operator"`` points (see the module docstring).
        weight_clipping, activation_clipping: clipping methods of the quantizers.

    Raises:
        ValueError: on an unknown granularity.
    """

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
        super().__init__(input_size, hidden_size, 4, layer=layer, bidirectional=bidirectional)
        self.init_quantizers(
            granularity=granularity, operators=LSTM_OPERATORS, states=("h", "c"),
            weight_clipping=weight_clipping, activation_clipping=activation_clipping,
        )  # fmt: skip

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        lengths = lengths.to(x.device)
        w_ih, w_hh = self.quantized_weights()
        w_hh = self.per_direction(w_hh)
        b_ih = self.bias_quant(self.bias_ih).view(self.directions, -1)
        b_hh = self.bias_quant(self.bias_hh).view(self.directions, -1)
        ih_all = self.op("ih", self.input_product(self.input_quant(x), w_ih, lengths) + b_ih)
        masks = self.masks(lengths, steps, x.dtype)
        h = x.new_zeros(batch, self.directions, self.hidden_size)
        c = torch.zeros_like(h)
        outputs = []
        hsz = self.hidden_size
        for t in range(steps):
            h_in = self.step_quant(self.hidden_quant, h)
            hh = self.op("hh", torch.einsum("bdk,dgk->bdg", h_in, w_hh) + b_hh)
            gates = ih_all[t] + hh
            i = self.op("i", torch.sigmoid(gates[..., :hsz]))
            f = self.op("f", torch.sigmoid(gates[..., hsz : 2 * hsz]))
            g = self.op("g", torch.tanh(gates[..., 2 * hsz : 3 * hsz]))
            o = self.op("o", torch.sigmoid(gates[..., 3 * hsz :]))
            c_new = self.step_quant(self.cell_quant, self.op("fc", f * c) + self.op("ig", i * g))
            h_new = self.op("oc", o * self.op("tanh_c", torch.tanh(c_new)))
            m = masks[t]
            c = m * c_new + (1.0 - m) * c
            h = m * h_new + (1.0 - m) * h
            outputs.append(m * h)
        return self.finish(outputs, lengths)
