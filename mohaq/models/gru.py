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
from typing_extensions import override

from mohaq.models.native import KernelChoice
from mohaq.models.recurrent_base import StepwiseRecurrentLayer
from mohaq.quant.clipping import ClippingMethod

Granularity = Literal["layer", "operator"]
GRU_OPERATORS: tuple[str, ...] = ("ih", "hh", "r", "z", "n", "rhn", "zh", "zn")


class GRULayer(StepwiseRecurrentLayer):
    """One (bi)directional GRU layer with named quantization points.

    Arguments as :class:`mohaq.models.lstm.LSTMLayer`.
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
            input_size, hidden_size, 3, layer=layer, bidirectional=bidirectional, kernel=kernel
        )
        self.init_quantizers(
            granularity=granularity, operators=GRU_OPERATORS, states=("h",),
            weight_clipping=weight_clipping, activation_clipping=activation_clipping,
        )  # fmt: skip

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, input_size)``, lengths ``(B,)`` -> ``(B, T, hidden_size * directions)``,
        zero at padded frames."""
        return self.run(x, lengths, "gru")

    @override
    def torch_kernel(self, x: Tensor, weights: list[Tensor], bidirectional: bool) -> Tensor:
        h0 = x.new_zeros(2 if bidirectional else 1, x.shape[0], self.hidden_size)
        return torch.gru(
            x, h0, weights, True, 1, 0.0, torch.is_grad_enabled(), bidirectional, True
        )[0]
