"""Drop-in quantizable replacements for ``torch.nn.GRU`` and ``torch.nn.LSTM``.

:class:`QuantGRU` and :class:`QuantLSTM` take what torch's modules take and
return what they return (``output, h_n`` and ``output, (h_n, c_n)``):
batch-first or time-major tensors, unbatched 2-D inputs and
:class:`~torch.nn.utils.rnn.PackedSequence` inputs, several layers with
dropout between them in training, one or two directions. Each layer is a
:class:`~mohaq.models.gru.GRULayer` / :class:`~mohaq.models.lstm.LSTMLayer`
with named quantization points, so a user's model gains them without changing
its code; with every quantizer off the output equals torch's.

What the toolkit's layers do not model is refused with
:class:`UnsupportedConfigurationError`: an LSTM projection (``proj_size``)
when converting, and a nonzero initial state ``hx`` at run time (the layers
start from zero states).

Final states: ``h_n`` is read from the outputs (each sequence's last valid
frame forward, its first frame backward), so it is what the quantized layer
computed. The LSTM's ``c_n`` is not an output of the layer: it is recomputed
from the layer's input and outputs with the float weights, which is exact
with quantization off and an estimate with it on.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from mohaq.models.gru import Granularity, GRULayer
from mohaq.models.lstm import LSTMLayer
from mohaq.models.native import KernelChoice
from mohaq.models.recurrent_base import GRANULARITIES, StepwiseRecurrentLayer
from mohaq.models.sequence import reverse_within_lengths
from mohaq.quant.clipping import CLIPPING_METHODS, ClippingMethod
from mohaq.quant.points import QuantPoint


class ConversionError(ValueError):
    """A module or setting that cannot be made quantizable."""


class UnsupportedConfigurationError(ConversionError):
    """A configuration of a torch module that the quantizable layers do not model."""


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raises ConversionError naming ``name``, the value and the allowed ones."""
    if value not in allowed:
        raise ConversionError(f"{name} must be one of {allowed}, got {value!r}")


class QuantizableRecurrent(nn.Module):
    """Stacked quantizable recurrent layers with torch's calling convention.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional: as torch's module (``bias=False`` keeps zero biases
            that never train and are not counted in the workload).
        name: the quantization points' prefix: layer ``k`` is ``name`` for a
            one-layer module and ``f"{name}.l{k}"`` otherwise.
        granularity: ``"layer"`` or ``"operator"`` quantization points.
        weight_clipping, activation_clipping: clipping methods of the quantizers.
        kernel: how the per-step loop runs (``"auto"``, ``"cpu"``, ``"script"``).

    Raises:
        ConversionError: on a size, dropout, granularity or clipping out of range.
    """

    cell: ClassVar[str]
    gates: ClassVar[int]
    layer_class: ClassVar[type[StepwiseRecurrentLayer]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        name: str,
        granularity: Granularity = "layer",
        weight_clipping: ClippingMethod = "mmse",
        activation_clipping: ClippingMethod = "mmse",
        kernel: KernelChoice = "auto",
    ) -> None:
        super().__init__()
        for arg, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConversionError(f"{arg} must be an integer >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConversionError(f"dropout must be in [0, 1), got {dropout!r}")
        check_choice("granularity", granularity, GRANULARITIES)
        check_choice("weight_clipping", weight_clipping, CLIPPING_METHODS)
        check_choice("activation_clipping", activation_clipping, CLIPPING_METHODS)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.name, self.granularity = bidirectional, name, granularity
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList()
        for index in range(num_layers):
            layer = self.layer_class(
                input_size if index == 0 else hidden_size * directions,
                hidden_size,
                layer=name if num_layers == 1 else f"{name}.l{index}",
                bidirectional=bidirectional,
                granularity=granularity,
                weight_clipping=weight_clipping,
                activation_clipping=activation_clipping,
                kernel=kernel,
            )
            if not bias:
                for parameter in (layer.bias_ih, layer.bias_hh):
                    nn.init.zeros_(parameter)
                    parameter.requires_grad_(False)
            self.layers.append(layer)

    # -- conversion ----------------------------------------------------------------------
    @classmethod
    def torch_class(cls) -> type[nn.RNNBase]:
        raise NotImplementedError

    @classmethod
    def from_float(
        cls,
        module: nn.RNNBase,
        *,
        name: str,
        granularity: Granularity = "layer",
        weight_clipping: ClippingMethod = "mmse",
        activation_clipping: ClippingMethod = "mmse",
        kernel: KernelChoice = "auto",
    ) -> QuantizableRecurrent:
        """The quantizable copy of torch's ``module``: same sizes, weights copied,
        same device and dtype.

        Raises:
            UnsupportedConfigurationError: for an LSTM with ``proj_size > 0``.
            ConversionError: if ``module`` is not the torch class this replaces.
        """
        expected = cls.torch_class()
        if type(module) is not expected:
            raise ConversionError(
                f"{cls.__name__}.from_float converts torch.nn.{expected.__name__}, "
                f"got {type(module).__name__}"
            )
        if getattr(module, "proj_size", 0):
            raise UnsupportedConfigurationError(
                f"{name!r}: {expected.__name__} with proj_size={module.proj_size} is not "
                "supported; allowed: proj_size=0 (no projection)"
            )
        converted = cls(
            module.input_size, module.hidden_size, module.num_layers,
            bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
            bidirectional=module.bidirectional, name=name, granularity=granularity,
            weight_clipping=weight_clipping, activation_clipping=activation_clipping,
            kernel=kernel,
        )  # fmt: skip
        reference = module.weight_ih_l0
        converted.to(device=reference.device, dtype=reference.dtype)
        converted.copy_weights_from(module)
        converted.train(module.training)
        return converted

    @torch.no_grad()
    def copy_weights_from(self, module: nn.RNNBase) -> None:
        """Copies torch's per-layer, per-direction weights into the stacked layers."""
        rows = self.gates * self.hidden_size
        for index, layer in enumerate(self.layers):
            for direction in range(layer.directions):
                suffix = f"_l{index}" + ("_reverse" if direction == 1 else "")
                block = slice(direction * rows, (direction + 1) * rows)
                w_ih = getattr(module, f"weight_ih{suffix}")
                w_hh = getattr(module, f"weight_hh{suffix}")
                layer.weight[block].copy_(torch.cat((w_ih, w_hh), dim=1))
                if self.bias:
                    layer.bias_ih[block].copy_(getattr(module, f"bias_ih{suffix}"))
                    layer.bias_hh[block].copy_(getattr(module, f"bias_hh{suffix}"))

    # -- what the search and the cost models see -----------------------------------------
    def quant_points(self) -> tuple[QuantPoint, ...]:
        return tuple(point for layer in self.layers for point in layer.quant_points())

    def fixed_params(self) -> int:
        if not self.bias:
            return 0
        return sum(layer.fixed_params() for layer in self.layers)

    def flatten_parameters(self) -> None:
        """No-op: kept so user code written for torch's module runs unchanged."""

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"batch_first={self.batch_first}, bidirectional={self.bidirectional}, "
            f"dropout={self.dropout}, name={self.name!r}, granularity={self.granularity!r}"
        )

    # -- running -------------------------------------------------------------------------
    def _check_initial_state(self, hx: Tensor | tuple[Tensor, Tensor] | None) -> None:
        if hx is None:
            return
        states = hx if isinstance(hx, tuple) else (hx,)
        if any(bool(torch.count_nonzero(state)) for state in states):
            raise UnsupportedConfigurationError(
                f"{self.name!r}: a nonzero initial state (hx) is not supported: the "
                "quantizable layers start from zero states; allowed: hx=None or zeros"
            )

    def _batch_major(self, input: Tensor | PackedSequence) -> tuple[Tensor, Tensor, bool]:
        """``(x (B, T, F), lengths (B,), unbatched)`` from any accepted input."""
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(input, batch_first=True)
            return x, lengths, False
        if input.dim() not in (2, 3):
            raise ConversionError(
                f"{self.name!r}: input must be 2-D (unbatched) or 3-D, got shape "
                f"{tuple(input.shape)}"
            )
        unbatched = input.dim() == 2
        if unbatched:
            x = input.unsqueeze(0)
        else:
            x = input if self.batch_first else input.transpose(0, 1)
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        return x, lengths, unbatched

    def _run(
        self, input: Tensor | PackedSequence
    ) -> tuple[Tensor | PackedSequence, Tensor, list[tuple[Tensor, Tensor]], Tensor, bool]:
        """Runs the stack: (output as torch returns it, h_n ``(L*D, B, H)``,
        each layer's (input, output) batch-major, the lengths, unbatched)."""
        x, lengths, unbatched = self._batch_major(input)
        finals: list[Tensor] = []
        trace: list[tuple[Tensor, Tensor]] = []
        for index, layer in enumerate(self.layers):
            if index > 0 and self.dropout > 0.0:
                x = F.dropout(x, self.dropout, self.training)
            outputs = layer(x, lengths)
            trace.append((x, outputs))
            finals += self._final_hidden(outputs, lengths)
            x = outputs
        h_n = torch.stack(finals)
        if isinstance(input, PackedSequence):
            return self._packed_like(x, lengths, input), h_n, trace, lengths, False
        if unbatched:
            return x.squeeze(0), h_n.squeeze(1), trace, lengths, True
        return (x if self.batch_first else x.transpose(0, 1)), h_n, trace, lengths, False

    def _final_hidden(self, outputs: Tensor, lengths: Tensor) -> list[Tensor]:
        """Per direction ``(B, H)``: forward at each last valid frame, backward at frame 0."""
        hidden = self.hidden_size
        last = (lengths.to(outputs.device) - 1).view(-1, 1, 1).expand(-1, 1, hidden)
        forward = outputs[:, :, :hidden].gather(1, last).squeeze(1)
        if not self.bidirectional:
            return [forward]
        return [forward, outputs[:, 0, hidden:]]

    @staticmethod
    def _packed_like(x: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
        """``x`` (batch-major, original order) packed with ``like``'s batch order."""
        order = like.sorted_indices
        if order is not None:
            x, lengths = x[order.to(x.device)], lengths[order.to(lengths.device)]
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True)
        return PackedSequence(packed.data, packed.batch_sizes, like.sorted_indices,
                              like.unsorted_indices)  # fmt: skip


class QuantGRU(QuantizableRecurrent):
    """A quantizable ``torch.nn.GRU`` (see the module docstring and
    :class:`QuantizableRecurrent` for the arguments)."""

    cell = "gru"
    gates = 3
    layer_class = GRULayer

    @classmethod
    def torch_class(cls) -> type[nn.RNNBase]:
        return nn.GRU

    def forward(
        self, input: Tensor | PackedSequence, hx: Tensor | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """As ``torch.nn.GRU.forward``; ``hx`` must be None or zeros."""
        self._check_initial_state(hx)
        output, h_n, _, _, _ = self._run(input)
        return output, h_n


class QuantLSTM(QuantizableRecurrent):
    """A quantizable ``torch.nn.LSTM`` (see the module docstring and
    :class:`QuantizableRecurrent` for the arguments); no ``proj_size``."""

    cell = "lstm"
    gates = 4
    layer_class = LSTMLayer

    @classmethod
    def torch_class(cls) -> type[nn.RNNBase]:
        return nn.LSTM

    def forward(
        self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """As ``torch.nn.LSTM.forward``; ``hx`` must be None or zeros."""
        self._check_initial_state(hx)
        output, h_n, trace, lengths, unbatched = self._run(input)
        cells = [
            cell
            for layer, (x, outputs) in zip(self.layers, trace, strict=True)
            for cell in self._final_cells(layer, x, outputs, lengths)
        ]
        c_n = torch.stack(cells)
        return output, (h_n, c_n.squeeze(1) if unbatched else c_n)

    def _final_cells(
        self, layer: StepwiseRecurrentLayer, x: Tensor, outputs: Tensor, lengths: Tensor
    ) -> list[Tensor]:
        """Per direction the cell state after each sequence's last step ``(B, H)``,
        recomputed in float from the layer's input and its outputs (the hidden states)."""
        batch, steps, _ = x.shape
        hidden, rows = self.hidden_size, self.gates * self.hidden_size
        lengths = lengths.to(x.device)
        valid = torch.arange(steps, device=x.device)[None, :] < lengths[:, None]
        cells = []
        for direction in range(layer.directions):
            block = slice(direction * rows, (direction + 1) * rows)
            weight = layer.weight[block]
            bias = layer.bias_ih[block] + layer.bias_hh[block]
            inputs, states = x, outputs[:, :, direction * hidden : (direction + 1) * hidden]
            if direction == 1:
                inputs = reverse_within_lengths(inputs, lengths)
                states = reverse_within_lengths(states, lengths)
            previous = torch.cat((states.new_zeros(batch, 1, hidden), states[:, :-1]), dim=1)
            gates = F.linear(torch.cat((inputs, previous), dim=-1), weight, bias)
            i, f, g, _ = gates.chunk(4, dim=-1)
            i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
            cell = x.new_zeros(batch, hidden)
            for step in range(steps):
                updated = f[:, step] * cell + i[:, step] * g[:, step]
                cell = torch.where(valid[:, step, None], updated, cell)
            cells.append(cell)
        return cells
