"""A quantizable replacement for the `sru` package's ``SRU`` module.

:class:`QuantSRU` takes what ``sru.SRU`` takes and returns what it returns:
time-major ``(length, batch, input)`` tensors (or a
:class:`~torch.nn.utils.rnn.PackedSequence`), an optional ``mask_pad``
``(length, batch)`` marking padding after each sequence, and the outputs with
the last cell state of every layer, ``(layers, batch, hidden * directions)``
(or ``(layers * directions, batch, hidden)`` with ``nn_rnn_compatible_return``).
Each layer is the toolkit's :class:`~mohaq.models.sru.SRULayer` with the
cell's weights imported by :func:`mohaq.models.sru_import.import_sru_cell`, so
only the package's plain configuration converts (no layer norm, no tanh, no
custom module, skip term on, v2 equations); its points are
``<path>.weight`` / ``<path>.input`` (``<path>.l<k>`` per layer of a stack)
and a projection's ``<layer>.proj.weight`` / ``.input``.

Refused with :class:`~mohaq.convert.recurrent.UnsupportedConfigurationError`:
``proj_input_to_hidden_first``, a nonzero ``c0``, padding that is not at the
end of a sequence, and training with the package's variational ``dropout`` or
``rnn_dropout`` (their masks are not modelled; evaluation is exact).

The last cell state is recomputed in float from each layer's input (the
product and the element-wise recurrence), exact with quantization off and an
estimate with it on.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from mohaq.convert.recurrent import ConversionError, UnsupportedConfigurationError
from mohaq.models.native import KernelChoice
from mohaq.models.sequence import reverse_within_lengths
from mohaq.models.sru import SRULayer
from mohaq.models.sru_import import SRUImportError, import_sru_cell
from mohaq.quant.clipping import ClippingMethod
from mohaq.quant.points import QuantPoint


def is_sru_module(module: nn.Module) -> bool:
    """Whether ``module`` is the `sru` package's ``SRU`` stack (without importing it)."""
    klass = type(module)
    return klass.__name__ == "SRU" and klass.__module__.split(".")[0] == "sru"


class QuantSRU(nn.Module):
    """A quantizable ``sru.SRU`` (see the module docstring).

    Args:
        layers: the converted layers, in stack order.
        name: the module path the points are named by.
        nn_rnn_compatible_return: return the cell states as torch's RNNs do.
        dropout: whether the original applied variational dropout in training.
    """

    def __init__(
        self,
        layers: list[SRULayer],
        *,
        name: str,
        nn_rnn_compatible_return: bool = False,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.name = name
        self.nn_rnn_compatible_return = nn_rnn_compatible_return
        self.had_dropout = dropout

    @classmethod
    def from_float(
        cls,
        module: Any,
        *,
        name: str,
        weight_clipping: ClippingMethod = "mmse",
        activation_clipping: ClippingMethod = "mmse",
        kernel: KernelChoice = "auto",
    ) -> QuantSRU:
        """The quantizable copy of an ``sru.SRU``: same sizes, weights imported,
        same device, dtype and mode.

        Raises:
            UnsupportedConfigurationError: for options the layers do not model.
            ConversionError: if ``module`` is not an ``sru.SRU``.
        """
        if not is_sru_module(module):
            raise ConversionError(f"QuantSRU converts sru.SRU, got {type(module).__name__}")
        if getattr(module, "input_to_hidden", None) is not None:
            raise UnsupportedConfigurationError(
                f"{name!r}: sru.SRU(proj_input_to_hidden_first=True) is not supported; "
                "allowed: proj_input_to_hidden_first=False"
            )
        cells = list(module.rnn_lst)
        layers = []
        dropout = False
        for index, cell in enumerate(cells):
            layer_name = name if len(cells) == 1 else f"{name}.l{index}"
            layer = SRULayer(
                cell.input_size, cell.hidden_size, layer=layer_name,
                bidirectional=cell.bidirectional,
                projection_size=cell.projection_size or None,
                projection_layer=f"{layer_name}.proj", highway_bias=cell.highway_bias,
                rescale=cell.rescale, weight_clipping=weight_clipping,
                activation_clipping=activation_clipping, kernel=kernel,
            )  # fmt: skip
            reference = cell.weight
            layer.to(device=reference.device, dtype=reference.dtype)
            try:
                import_sru_cell(layer, cell)
            except SRUImportError as error:
                raise UnsupportedConfigurationError(f"{layer_name!r}: {error}") from error
            dropout = dropout or cell.dropout > 0 or cell.rnn_dropout > 0
            layers.append(layer)
        converted = cls(
            layers, name=name, dropout=dropout,
            nn_rnn_compatible_return=bool(module.nn_rnn_compatible_return),
        )  # fmt: skip
        converted.train(module.training)
        return converted

    def quant_points(self) -> tuple[QuantPoint, ...]:
        return tuple(point for layer in self.layers for point in layer.quant_points())

    def fixed_params(self) -> int:
        return sum(layer.fixed_params() for layer in self.layers)

    def forward(
        self,
        input: Tensor | PackedSequence,
        c0: Tensor | None = None,
        mask_pad: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """As ``sru.SRU.forward``; ``c0`` must be None or zeros."""
        if self.training and self.had_dropout:
            raise UnsupportedConfigurationError(
                f"{self.name!r}: the sru package's variational dropout in training is not "
                "modelled; allowed: eval mode, or dropout=0 and rnn_dropout=0"
            )
        if c0 is not None and bool(torch.count_nonzero(c0)):
            raise UnsupportedConfigurationError(
                f"{self.name!r}: a nonzero initial state (c0) is not supported; allowed: "
                "c0=None or zeros"
            )
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(input, batch_first=True)
        else:
            if input.dim() != 3:
                raise ConversionError(
                    f"{self.name!r}: input must be (length, batch, features), got shape "
                    f"{tuple(input.shape)}"
                )
            x = input.transpose(0, 1)
            lengths = self._lengths(x, mask_pad)
        cells = []
        for layer in self.layers:
            cells.append(self._final_cell(layer, x, lengths))
            x = layer(x, lengths)
        c = torch.stack(cells)
        if self.nn_rnn_compatible_return:
            layers, batch, _ = c.shape
            c = c.view(layers, batch, -1, self.layers[0].hidden_size).transpose(1, 2)
            c = c.reshape(-1, batch, self.layers[0].hidden_size)
        if isinstance(input, PackedSequence):
            return pack_padded_sequence(x.transpose(0, 1), lengths, enforce_sorted=False), c
        return x.transpose(0, 1), c

    def _lengths(self, x: Tensor, mask_pad: Tensor | None) -> Tensor:
        batch, steps, _ = x.shape
        if mask_pad is None:
            return torch.full((batch,), steps, dtype=torch.long)
        valid = mask_pad.t() == 0  # (B, T)
        lengths = valid.sum(dim=1)
        expected = torch.arange(steps, device=valid.device)[None, :] < lengths[:, None]
        if not torch.equal(valid, expected):
            raise UnsupportedConfigurationError(
                f"{self.name!r}: mask_pad must mark padding after each sequence only; "
                "allowed: a prefix of valid steps per sequence"
            )
        return lengths.cpu()

    @staticmethod
    def _final_cell(layer: SRULayer, x: Tensor, lengths: Tensor) -> Tensor:
        """The cell state after each sequence's last step, ``(B, D*H)``, recomputed
        in float: c_t = f_t c_{t-1} + (1 - f_t) U_c, f_t = sigmoid(U_f + v_f c_{t-1} + b_f)."""
        batch, steps, _ = x.shape
        source = layer.projection(x) if layer.projection is not None else x
        u = nn.functional.linear(source, layer.weight)
        u = u.view(batch, steps, layer.directions, layer.num_matrices, layer.hidden_size)
        lengths = lengths.to(x.device)
        valid = torch.arange(steps, device=x.device)[None, :] < lengths[:, None]
        finals = []
        for direction in range(layer.directions):
            ud = u[:, :, direction]
            if direction == 1:
                ud = reverse_within_lengths(ud, lengths)
            cell = x.new_zeros(batch, layer.hidden_size)
            for step in range(steps):
                forget = torch.sigmoid(
                    ud[:, step, 1] + layer.v_forget[direction] * cell + layer.b_forget[direction]
                )
                updated = forget * cell + (1 - forget) * ud[:, step, 0]
                cell = torch.where(valid[:, step, None], updated, cell)
            finals.append(cell)
        return torch.cat(finals, dim=-1)
