"""Shared plumbing of the step-by-step recurrent layers (GRU, LSTM).

The input product runs over all steps at once, in one matrix product; only
the recurrent product and the gates run per step. Both directions step
together: the backward direction's inputs are reversed within each
sequence's length first, so one loop serves both, and padded steps carry the
state unchanged. The loop is compiled C++ on the CPU
(:mod:`mohaq.models.cell_cpu`), TorchScript elsewhere
(:mod:`mohaq.models.cell_loops`); a float cell runs in torch's own fused
kernel (see :meth:`StepwiseRecurrentLayer.run`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from mohaq.models.cell_cpu import cell_cpu_loop, cpu_cell_available
from mohaq.models.cell_loops import (
    GRU_LOOP_POINTS,
    LSTM_LOOP_POINTS,
    OFF,
    gru_loop,
    loop_quantization,
    lstm_loop,
    observe_records,
)
from mohaq.models.native import KERNEL_CHOICES, KernelChoice
from mohaq.models.packed_linear import PackedLinear
from mohaq.models.sequence import reverse_within_lengths, step_mask
from mohaq.quant.clipping import ClippingMethod
from mohaq.quant.points import QuantPoint
from mohaq.quant.quantizer import FakeQuantizer

GRANULARITIES: tuple[str, ...] = ("layer", "operator")
# Recurrent state name -> the attribute of its quantizer.
_STATE_ATTRIBUTES = {"h": "hidden_quant", "c": "cell_quant"}
LOOP_POINTS: dict[str, tuple[str, ...]] = {"gru": GRU_LOOP_POINTS, "lstm": LSTM_LOOP_POINTS}
SCRIPTED_LOOPS: dict[str, Callable[..., tuple[Tensor, list[list[Tensor]]]]] = {
    "gru": gru_loop,
    "lstm": lstm_loop,
}


class StepwiseRecurrentLayer(nn.Module):
    """Base of GRU/LSTM layers: one weight ``(D*G*H, in + H)`` = [W_ih | W_hh] per gate row.

    Args:
        input_size: input features.
        hidden_size: units per direction.
        gates: gate blocks per direction (GRU 3, LSTM 4).
        layer: the layer's point prefix.
        bidirectional: two directions.
        kernel: how the per-step loop runs (see :meth:`run`): ``"auto"``,
            ``"cpu"`` (the compiled loop, always) or ``"script"`` (the
            TorchScript loop, always).

    Raises:
        ValueError: on an unknown ``kernel``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        gates: int,
        *,
        layer: str,
        bidirectional: bool,
        kernel: KernelChoice = "auto",
    ) -> None:
        super().__init__()
        if kernel not in KERNEL_CHOICES:
            raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
        self.kernel: KernelChoice = kernel
        self.input_size, self.hidden_size, self.gates, self.layer = (
            input_size, hidden_size, gates, layer,
        )  # fmt: skip
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions
        rows = self.directions * gates * hidden_size
        self.weight = nn.Parameter(torch.empty(rows, input_size + hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        # Packs the (quantized) input weight once for oneDNN in inference.
        self.product = PackedLinear()
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

    def whole_sequence_op(self, name: str, value: Tensor) -> Tensor:
        """Quantizes an operator's output computed for all steps at once (``ih``)
        at operator granularity; identity otherwise."""
        if self.granularity == "operator":
            return self.operator_quants[name](value)
        return value

    def loop_quantizers(self, points: tuple[str, ...]) -> list[FakeQuantizer | None]:
        """The quantizer of each of the loop's points, None where the layer has none."""
        found: list[FakeQuantizer | None] = []
        for point in points:
            if point in _STATE_ATTRIBUTES:
                found.append(getattr(self, _STATE_ATTRIBUTES[point]))
            elif self.granularity == "operator":
                found.append(self.operator_quants[point])
            else:
                found.append(None)
        return found

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

    def per_direction(self, matrix: Tensor) -> Tensor:
        """``(D*G*H, K)`` -> ``(D, G*H, K)``."""
        return matrix.view(self.directions, self.gates * self.hidden_size, -1)

    def run(self, x: Tensor, lengths: Tensor, cell: str) -> Tensor:
        """Quantized weights and input, the input product, the per-step loop of
        ``cell`` (``"gru"``, ``"lstm"``), and the outputs ``(B, T, D*H)`` in
        original time order.

        The loop is the compiled CPU kernel (:mod:`mohaq.models.cell_cpu`) on
        CPU tensors where a compiler exists, else the scripted loop
        (:mod:`mohaq.models.cell_loops`). With ``kernel="auto"`` and no point
        inside the loop quantizing (float states, no operator points), the
        cell is torch's own: it runs in torch's fused kernel
        (:meth:`torch_kernel`) with the quantized weights and input.
        """
        steps = x.shape[1]
        lengths = lengths.to(x.device)
        valid = step_mask(lengths, steps, torch.bool)
        # Unpadded batches skip the masks in the loop and reverse by flipping.
        padded = bool((~valid).any())
        w_ih, w_hh = self.quantized_weights()
        b_ih = self.bias_quant(self.bias_ih)
        b_hh = self.bias_quant(self.bias_hh).view(self.directions, -1)
        x = self.input_quant(x)
        quantizers = self.loop_quantizers(LOOP_POINTS[cell])
        modes, scales, lows, highs = loop_quantization(quantizers, x)
        float_cell = all(mode == OFF for mode in modes) and self._input_product_is_float()
        if self.kernel == "auto" and float_cell:
            weights = (w_ih, w_hh, b_ih, b_hh.reshape(-1))
            outputs = self._run_torch_kernel(x, weights, lengths, padded)
            return outputs * valid.unsqueeze(-1).to(outputs.dtype) if padded else outputs
        product = self.input_product(x, w_ih, b_ih, lengths if padded else None)
        ih, w_hh = self.whole_sequence_op("ih", product), self.per_direction(w_hh)
        if self.kernel != "script" and cpu_cell_available(ih, w_hh, b_hh):
            outputs, records = cell_cpu_loop(
                cell, ih, w_hh, b_hh, lengths, modes, scales, lows, highs
            )
        elif self.kernel == "cpu":
            raise ValueError(
                "kernel 'cpu' needs CPU float32/float64 tensors and a C++ compiler; "
                "use 'auto' or 'script'"
            )
        else:
            outputs, records = SCRIPTED_LOOPS[cell](
                ih, w_hh.transpose(1, 2).contiguous(), b_hh.unsqueeze(1),
                valid.t()[:, None, :, None] if padded else None, modes, scales, lows, highs,
                torch.is_grad_enabled(),
            )  # fmt: skip
        observe_records(quantizers, records)
        return self.batch_major(outputs, lengths if padded else None)

    def _input_product_is_float(self) -> bool:
        if self.granularity == "layer":
            return True
        quantizer = self.operator_quants["ih"]
        return quantizer.bits is None and not quantizer.observing

    def torch_kernel(self, x: Tensor, weights: list[Tensor], bidirectional: bool) -> Tensor:
        """torch's fused layer (``torch.gru``, ``torch.lstm``) on batch-first ``x``
        with ``[w_ih, w_hh, b_ih, b_hh]`` per direction; returns its outputs."""
        raise NotImplementedError

    def _run_torch_kernel(
        self,
        x: Tensor,
        weights: tuple[Tensor, Tensor, Tensor, Tensor],
        lengths: Tensor,
        padded: bool,
    ) -> Tensor:
        rows = self.gates * self.hidden_size
        per_direction = [
            [w[d * rows : (d + 1) * rows] for w in weights] for d in range(self.directions)
        ]
        if not padded or self.directions == 1:
            # Padding at the end cannot reach earlier frames in the forward direction.
            flat = [w for direction in per_direction for w in direction]
            return self.torch_kernel(x, flat, self.directions == 2)
        # The backward direction must start at each sequence's last valid frame.
        forward = self.torch_kernel(x, per_direction[0], False)
        backward = self.torch_kernel(reverse_within_lengths(x, lengths), per_direction[1], False)
        return torch.cat((forward, reverse_within_lengths(backward, lengths)), dim=-1)

    def input_product(
        self, x: Tensor, w_ih: Tensor, b_ih: Tensor, lengths: Tensor | None
    ) -> Tensor:
        """All steps' input products in one matrix product, time-major ``(T, D, B, G*H)``,
        direction 1 reversed within each sequence's length (``lengths`` None: unpadded)."""
        batch, steps, _ = x.shape
        u = self.product(x, w_ih, b_ih).view(batch, steps, self.directions, -1).transpose(0, 1)
        if self.directions == 1:
            return u.transpose(1, 2).contiguous()
        return torch.stack((u[:, :, 0], _reverse_time(u[:, :, 1], lengths)), dim=1)

    def batch_major(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        """Per-step outputs ``(T, D, B, H)`` -> ``(B, T, D*H)``, direction 1 back in time order."""
        steps, _, batch, _ = outputs.shape
        if self.directions == 2:
            outputs = torch.stack((outputs[:, 0], _reverse_time(outputs[:, 1], lengths)), dim=2)
        else:
            outputs = outputs.transpose(1, 2)
        return outputs.transpose(0, 1).reshape(batch, steps, self.output_size)

    def fixed_params(self) -> int:
        return self.bias_ih.numel() + self.bias_hh.numel()


def _reverse_time(time_major: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverses ``(T, B, ...)`` within each length; a plain flip when nothing is padded."""
    if lengths is None:
        return time_major.flip(0)
    return reverse_within_lengths(time_major, lengths, time_dim=0)
