"""A Linear layer whose weight, input and bias pass through fake quantizers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mohaq.models.packed_linear import PackedLinear
from mohaq.quant.clipping import ClippingMethod
from mohaq.quant.points import QuantPoint
from mohaq.quant.quantizer import FakeQuantizer


class QuantLinear(nn.Module):
    """``y = W q(x) + b`` with quantizers for the weight (a point), the input (a point)
    and the bias (fixed precision, not searched).

    Args:
        in_features: input size.
        out_features: output size.
        layer: the layer name the points belong to, e.g. ``"output"``.
        bias: whether the layer has a bias.
        weight_clipping: clipping method of the weight quantizer.
        activation_clipping: clipping method of the input quantizer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        layer: str,
        bias: bool = True,
        weight_clipping: ClippingMethod = "mmse",
        activation_clipping: ClippingMethod = "mmse",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.layer = in_features, out_features, layer
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.weight_quant = FakeQuantizer(
            f"{layer}.weight", role="weight", clipping=weight_clipping
        )
        self.input_quant = FakeQuantizer(
            f"{layer}.input", role="activation", clipping=activation_clipping
        )
        self.bias_quant = FakeQuantizer(None, role="fixed", clipping="minmax")
        # Packs the (quantized) weight once for oneDNN in inference.
        self.product = PackedLinear()

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias_quant(self.bias) if self.bias is not None else None
        return self.product(self.input_quant(x), self.weight_quant(self.weight), bias)

    def quant_points(self) -> tuple[QuantPoint, ...]:
        return (
            QuantPoint(f"{self.layer}.input", "activation", self.layer),
            QuantPoint(
                f"{self.layer}.weight", "weight", self.layer,
                params=self.weight.numel(), macs_per_frame=self.weight.numel(),
                in_features=self.in_features, out_features=self.out_features,
                input_point=f"{self.layer}.input",
            ),
        )  # fmt: skip

    def fixed_params(self) -> int:
        return self.bias.numel() if self.bias is not None else 0
