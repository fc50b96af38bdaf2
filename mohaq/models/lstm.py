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
from typing_extensions import override

from mohaq.models.gru import Granularity
from mohaq.models.native import KernelChoice
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
        kernel: how the per-step loop runs: ``"auto"``, ``"cpu"`` or ``"script"``
            (see :meth:`~mohaq.models.recurrent_base.StepwiseRecurrentLayer.run`).

    Raises:
        ValueError: on an unknown granularity or kernel.
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
        kernel: KernelChoice = "auto",
    ) -> None:
        super().__init__(
            input_size, hidden_size, 4, layer=layer, bidirectional=bidirectional, kernel=kernel
        )
        self.init_quantizers(
            granularity=granularity, operators=LSTM_OPERATORS, states=("h", "c"),
            weight_clipping=weight_clipping, activation_clipping=activation_clipping,
        )  # fmt: skip

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, input_size)``, lengths ``(B,)`` -> ``(B, T, hidden_size * directions)``,
        zero at padded frames."""
        return self.run(x, lengths, "lstm")

    @override
    def torch_kernel(self, x: Tensor, weights: list[Tensor], bidirectional: bool) -> Tensor:
        h0 = x.new_zeros(2 if bidirectional else 1, x.shape[0], self.hidden_size)
        return torch.lstm(
            x,
            (h0, torch.zeros_like(h0)),
            weights,
            True,
            1,
            0.0,
            torch.is_grad_enabled(),
            bidirectional,
            True,
        )[0]
