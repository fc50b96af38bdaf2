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
from mohaq.quant.points import QuantPoint
from mohaq.quant.quantizer import FakeQuantizer

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
        self.granularity = granularity
        act = activation_clipping
        self.bias_quant = FakeQuantizer(None, role="fixed", clipping="minmax")
        if granularity == "layer":
            self.weight_quant = FakeQuantizer(
                f"{layer}.weight", role="weight", clipping=weight_clipping
            )
            self.input_quant = FakeQuantizer(f"{layer}.input", role="activation", clipping=act)
            self.hidden_quant = FakeQuantizer(None, role="state", clipping="minmax")
        elif granularity == "operator":
            self.w_ih_quant = FakeQuantizer(
                f"{layer}.w_ih", role="weight", clipping=weight_clipping
            )
            self.w_hh_quant = FakeQuantizer(
                f"{layer}.w_hh", role="weight", clipping=weight_clipping
            )
            self.input_quant = FakeQuantizer(f"{layer}.x", role="activation", clipping=act)
            self.hidden_quant = FakeQuantizer(f"{layer}.h", role="state", clipping=act)
            self.operator_quants = torch.nn.ModuleDict(
                {op: FakeQuantizer(f"{layer}.{op}", role="activation", clipping=act)
                 for op in GRU_OPERATORS}
            )  # fmt: skip
        else:
            raise ValueError(f"granularity must be 'layer' or 'operator', got {granularity!r}")

    def _weights(self) -> tuple[Tensor, Tensor]:
        if self.granularity == "layer":
            weight = self.weight_quant(self.weight)
            return weight[:, : self.input_size], weight[:, self.input_size :]
        return (
            self.w_ih_quant(self.weight[:, : self.input_size]),
            self.w_hh_quant(self.weight[:, self.input_size :]),
        )

    def _op(self, name: str, value: Tensor) -> Tensor:
        if self.granularity == "operator":
            return self.step_quant(self.operator_quants[name], value)
        return value

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        lengths = lengths.to(x.device)
        w_ih, w_hh = self._weights()
        w_hh = self.per_direction(w_hh)
        b_ih = self.bias_quant(self.bias_ih).view(self.directions, -1)
        b_hh = self.bias_quant(self.bias_hh).view(self.directions, -1)
        ih_all = self.input_product(self.input_quant(x), w_ih, lengths) + b_ih
        ih_all = self._op("ih", ih_all)
        masks = self.masks(lengths, steps, x.dtype)
        h = x.new_zeros(batch, self.directions, self.hidden_size)
        outputs = []
        hidden = self.hidden_size
        for t in range(steps):
            h_in = self.step_quant(self.hidden_quant, h)
            hh = self._op("hh", torch.einsum("bdk,dgk->bdg", h_in, w_hh) + b_hh)
            ih = ih_all[t]
            r = self._op("r", torch.sigmoid(ih[..., :hidden] + hh[..., :hidden]))
            z = self._op(
                "z", torch.sigmoid(ih[..., hidden : 2 * hidden] + hh[..., hidden : 2 * hidden])
            )
            rhn = self._op("rhn", r * hh[..., 2 * hidden :])
            n = self._op("n", torch.tanh(ih[..., 2 * hidden :] + rhn))
            h_new = self._op("zn", (1.0 - z) * n) + self._op("zh", z * h_in)
            m = masks[t]
            h = m * h_new + (1.0 - m) * h
            outputs.append(m * h)
        return self.finish(outputs, lengths)

    def quant_points(self) -> tuple[QuantPoint, ...]:
        d, g, hsz, ins = self.directions, 3 * self.hidden_size, self.hidden_size, self.input_size
        layer = self.layer
        if self.granularity == "layer":
            params = self.weight.numel()
            return (
                QuantPoint(f"{layer}.input", "activation", layer),
                QuantPoint(f"{layer}.weight", "weight", layer, params=params, macs_per_frame=params,
                           in_features=ins + hsz, out_features=d * g, input_point=f"{layer}.input"),
            )  # fmt: skip
        points = [
            QuantPoint(f"{layer}.x", "activation", layer),
            QuantPoint(f"{layer}.h", "state", layer),
            QuantPoint(f"{layer}.w_ih", "weight", layer, params=d * g * ins, macs_per_frame=d * g * ins,
                       in_features=ins, out_features=d * g, input_point=f"{layer}.x"),
            QuantPoint(f"{layer}.w_hh", "weight", layer, params=d * g * hsz, macs_per_frame=d * g * hsz,
                       in_features=hsz, out_features=d * g, input_point=f"{layer}.h"),
        ]  # fmt: skip
        points += [QuantPoint(f"{layer}.{op}", "operator", layer) for op in GRU_OPERATORS]
        return tuple(points)
