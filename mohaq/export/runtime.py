"""Integer-only reference inference of an exported model.

:class:`IntegerAcousticModel` runs an :class:`~mohaq.export.program.IntegerProgram`
with integer tensors only: integer weights and activations, int32
accumulators (int64 where the bound needs it), Q31 multipliers and shifts
for every rescaling, table lookups for sigmoid and tanh, 16-bit states.
Two steps are float, by design: the feature vector is quantized to the first
layer's input point (``round(x / s_x)``), and the output layer's accumulator
is dequantized to scores (``acc * s_w * s_x``), whose argmax is the
prediction (the dequantization is a positive scale per class, so on a
per-tensor scale the argmax of the integers is the same).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mohaq.export.layers.gru import IntegerGRU
from mohaq.export.layers.linear import IntegerLinear
from mohaq.export.layers.lstm import IntegerLSTM
from mohaq.export.layers.sru import IntegerSRU
from mohaq.export.program import ExportError, IntegerProgram

RUNNERS: dict[str, Any] = {"sru": IntegerSRU, "gru": IntegerGRU, "lstm": IntegerLSTM}


class IntegerAcousticModel(nn.Module):
    """``forward(features, lengths) -> scores`` on integers, from an integer program.

    Args:
        program: the lowered (or loaded) integer model.

    Raises:
        ExportError: on a layer kind the runtime does not know.
    """

    def __init__(self, program: IntegerProgram) -> None:
        super().__init__()
        self.program = program
        descriptions = program.config["layers"]
        self.recurrent = []
        for description in descriptions[:-1]:
            runner = RUNNERS.get(description["kind"])
            if runner is None:
                raise ExportError(
                    f"unknown layer kind {description['kind']!r}; known: {', '.join(RUNNERS)}"
                )
            self.recurrent.append(runner(program, description))
        self.output = IntegerLinear(program, descriptions[-1])
        self.num_classes = int(program.config["model"]["num_classes"])

    @torch.no_grad()
    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, F)`` float features, ``(B,)`` lengths -> ``(B, T, C)`` float scores."""
        device = features.device
        x: Tensor = features.detach().cpu()
        lengths = lengths.detach().cpu()
        for layer in self.recurrent:
            x = layer(x, lengths)
        return self.output(x).to(device)
