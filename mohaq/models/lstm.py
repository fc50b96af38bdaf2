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
from torch import Tensor, nn

from mohaq.models.gru import Granularity
from mohaq.models.recurrent_base import StepwiseRecurrentLayer
from mohaq.quant.clipping import ClippingMethod
from mohaq.quant.points import QuantPoint
from mohaq.quant.quantizer import FakeQuantizer

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
        self.granularity = granularity
        act = activation_clipping
        self.bias_quant = FakeQuantizer(None, role="fixed", clipping="minmax")
        if granularity == "layer":
            self.weight_quant = FakeQuantizer(
                f"{layer}.weight", role="weight", clipping=weight_clipping
            )
            self.input_quant = FakeQuantizer(f"{layer}.input", role="activation", clipping=act)
            self.hidden_quant = FakeQuantizer(None, role="state", clipping="minmax")
            self.cell_quant = FakeQuantizer(None, role="state", clipping="minmax")
        elif granularity == "operator":
            self.w_ih_quant = FakeQuantizer(
                f"{layer}.w_ih", role="weight", clipping=weight_clipping
            )
            self.w_hh_quant = FakeQuantizer(
                f"{layer}.w_hh", role="weight", clipping=weight_clipping
            )
            self.input_quant = FakeQuantizer(f"{layer}.x", role="activation", clipping=act)
            self.hidden_quant = FakeQuantizer(f"{layer}.h", role="state", clipping=act)
            self.cell_quant = FakeQuantizer(f"{layer}.c", role="state", clipping=act)
            self.operator_quants = nn.ModuleDict(
                {
                    op: FakeQuantizer(f"{layer}.{op}", role="activation", clipping=act)
                    for op in LSTM_OPERATORS
                }
            )
        else:
            raise ValueError(f"granularity must be 'layer' or 'operator', got {granularity!r}")

    def _op(self, name: str, value: Tensor) -> Tensor:
        if self.granularity == "operator":
            return self.step_quant(self.operator_quants[name], value)
        return value

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        lengths = lengths.to(x.device)
        if self.granularity == "layer":
            weight = self.weight_quant(self.weight)
            w_ih, w_hh = weight[:, : self.input_size], weight[:, self.input_size :]
        else:
            w_ih = self.w_ih_quant(self.weight[:, : self.input_size])
            w_hh = self.w_hh_quant(self.weight[:, self.input_size :])
        w_hh = self.per_direction(w_hh)
        b_ih = self.bias_quant(self.bias_ih).view(self.directions, -1)
        b_hh = self.bias_quant(self.bias_hh).view(self.directions, -1)
        ih_all = self._op("ih", self.input_product(self.input_quant(x), w_ih, lengths) + b_ih)
        masks = self.masks(lengths, steps, x.dtype)
        h = x.new_zeros(batch, self.directions, self.hidden_size)
        c = torch.zeros_like(h)
        outputs = []
        hsz = self.hidden_size
        for t in range(steps):
            h_in = self.step_quant(self.hidden_quant, h)
            hh = self._op("hh", torch.einsum("bdk,dgk->bdg", h_in, w_hh) + b_hh)
            gates = ih_all[t] + hh
            i = self._op("i", torch.sigmoid(gates[..., :hsz]))
            f = self._op("f", torch.sigmoid(gates[..., hsz : 2 * hsz]))
            g = self._op("g", torch.tanh(gates[..., 2 * hsz : 3 * hsz]))
            o = self._op("o", torch.sigmoid(gates[..., 3 * hsz :]))
            c_new = self.step_quant(self.cell_quant, self._op("fc", f * c) + self._op("ig", i * g))
            h_new = self._op("oc", o * self._op("tanh_c", torch.tanh(c_new)))
            m = masks[t]
            c = m * c_new + (1.0 - m) * c
            h = m * h_new + (1.0 - m) * h
            outputs.append(m * h)
        return self.finish(outputs, lengths)

    def quant_points(self) -> tuple[QuantPoint, ...]:
        d, g, hsz, ins = self.directions, 4 * self.hidden_size, self.hidden_size, self.input_size
        layer = self.layer
        if self.granularity == "layer":
            params = self.weight.numel()
            return (
                QuantPoint(f"{layer}.input", "activation", layer),
                QuantPoint(f"{layer}.weight", "weight", layer, params=params,
                           macs_per_frame=params, in_features=ins + hsz, out_features=d * g,
                           input_point=f"{layer}.input"),
            )  # fmt: skip
        points = [
            QuantPoint(f"{layer}.x", "activation", layer),
            QuantPoint(f"{layer}.h", "state", layer),
            QuantPoint(f"{layer}.c", "state", layer),
            QuantPoint(f"{layer}.w_ih", "weight", layer, params=d * g * ins, macs_per_frame=d * g * ins,
                       in_features=ins, out_features=d * g, input_point=f"{layer}.x"),
            QuantPoint(f"{layer}.w_hh", "weight", layer, params=d * g * hsz, macs_per_frame=d * g * hsz,
                       in_features=hsz, out_features=d * g, input_point=f"{layer}.h"),
        ]  # fmt: skip
        points += [QuantPoint(f"{layer}.{op}", "operator", layer) for op in LSTM_OPERATORS]
        return tuple(points)
