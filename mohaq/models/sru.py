"""A quantizable SRU layer (Lei et al., 2018, the version-2 equations).

Per direction, with U = W x_t from one matrix product over all steps::

    f_t = sigmoid(U_f + v_f * c_{t-1} + b_f)
    c_t = f_t * c_{t-1} + (1 - f_t) * U_c
    r_t = sigmoid(U_r + v_r * c_{t-1} + b_r)
    h_t = r_t * c_t + (1 - r_t) * x'_t * alpha

The highway term x'_t is the layer's input itself when its size equals the
output size (hidden x directions): with MOHAQ's projection in front of layers
1-3, the product uses the 256-dim projection while the highway uses the
1100-dim input, so W has 3 matrices, as MOHAQ counts. Otherwise (layer 0:
23 inputs) a 4th matrix maps the input to the highway term, as the `sru`
package does; the paper's layer 0 therefore has 23 x 4400 MACs per frame
where MOHAQ's table counts 23 x 3300. The reset (highway) gate bias b_r is
initialised to ``highway_bias`` (-1 in MOHAQ's recipe) and, when ``rescale``
is on, the highway term is scaled at run time by
``alpha = sqrt(1 + 2 exp(highway_bias))``, whether it is the input itself or
the 4th matrix's output. The `sru` package (``rescale=True``) scales the input
at run time the same way only for layers without a 4th matrix; for a layer
with one it multiplies that matrix by the scale once, at initialization, and
applies no scale at run time (:mod:`mohaq.models.sru_import` converts its
weights). With a projection the highway reads the layer input in float (its
quantized copy feeds only the projection); without one it reads the product's
quantized input.

One matrix product over all frames gives U for both directions; the
element-wise recurrence then runs fused, both directions in one call
(:func:`mohaq.models.sru_recurrence.sru_layer_recurrence`: a compiled kernel
on the CPU, a TorchScript loop elsewhere); the backward direction starts at
each sequence's last valid frame. Dropout between layers belongs to the stack
(:class:`mohaq.models.acoustic.AcousticModel`).

Quantization points: the product's weight (``<layer>.weight``, all matrices,
both directions) and its input (``<layer>.input``); a projection, if any, is a
:class:`QuantLinear` with its own two points. The recurrent vectors, biases
and the state are fixed-precision extras (16-bit in MOHAQ), not searched.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mohaq.models.native import KERNEL_CHOICES, KernelChoice
from mohaq.models.packed_linear import PackedLinear
from mohaq.models.quant_linear import QuantLinear
from mohaq.models.sru_recurrence import sru_layer_recurrence
from mohaq.quant.clipping import ClippingMethod
from mohaq.quant.points import QuantPoint
from mohaq.quant.quantizer import FakeQuantizer


class SRULayer(nn.Module):
    """One (bi)directional SRU layer, optionally with an input projection.

    Args:
        input_size: size of the layer's input.
        hidden_size: units per direction.
        layer: name of the layer's points, e.g. ``"sru1"``.
        bidirectional: run a backward direction too.
        projection_size: project the input to this size before the product
            (its points are ``proj<k>.*`` with ``projection_layer``).
        projection_layer: the projection's layer name.
        highway_bias: initial bias of the reset (highway) gate.
        rescale: scale the highway term by ``sqrt(1 + 2 exp(highway_bias))``.
        weight_clipping, activation_clipping: clipping methods of the quantizers.
        kernel: the recurrence's implementation (see
            :func:`mohaq.models.sru_recurrence.sru_layer_recurrence`): ``"auto"``
            the compiled CPU kernel on CPU tensors where a compiler exists, else
            the TorchScript loop; ``"cpu"`` or ``"script"`` to force one.

    Raises:
        ValueError: on an unknown ``kernel``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        layer: str,
        bidirectional: bool = True,
        projection_size: int | None = None,
        projection_layer: str | None = None,
        highway_bias: float = -1.0,
        rescale: bool = True,
        weight_clipping: ClippingMethod = "mmse",
        activation_clipping: ClippingMethod = "mmse",
        kernel: KernelChoice = "auto",
    ) -> None:
        super().__init__()
        if kernel not in KERNEL_CHOICES:
            raise ValueError(f"kernel must be one of {KERNEL_CHOICES}, got {kernel!r}")
        self.kernel: KernelChoice = kernel
        self.input_size, self.hidden_size, self.layer = input_size, hidden_size, layer
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions
        self.projection = None
        if projection_size is not None:
            self.projection = QuantLinear(
                input_size, projection_size, layer=projection_layer or f"{layer}_proj",
                bias=False, weight_clipping=weight_clipping,
                activation_clipping=activation_clipping,
            )  # fmt: skip
        product_input = projection_size if projection_size is not None else input_size
        self.highway_matrix = input_size != self.output_size
        self.num_matrices = 4 if self.highway_matrix else 3
        self.weight = nn.Parameter(
            torch.empty(self.directions * self.num_matrices * hidden_size, product_input)
        )
        shape = (self.directions, hidden_size)
        self.v_forget = nn.Parameter(torch.empty(shape))
        self.v_reset = nn.Parameter(torch.empty(shape))
        self.b_forget = nn.Parameter(torch.zeros(shape))
        self.b_reset = nn.Parameter(torch.full(shape, float(highway_bias)))
        self.alpha = math.sqrt(1.0 + 2.0 * math.exp(highway_bias)) if rescale else 1.0
        self.product_input = product_input
        # Packs the (quantized) weight once for oneDNN in inference.
        self.product = PackedLinear()
        self.weight_quant = FakeQuantizer(
            f"{layer}.weight", role="weight", clipping=weight_clipping
        )
        self.input_quant = FakeQuantizer(
            f"{layer}.input", role="activation", clipping=activation_clipping
        )
        self.vector_quant = FakeQuantizer(None, role="fixed", clipping="minmax")
        self.state_quant = FakeQuantizer(None, role="state", clipping="minmax")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = math.sqrt(3.0 / self.product_input)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.v_forget, -0.5, 0.5)
        nn.init.uniform_(self.v_reset, -0.5, 0.5)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, input_size)``, lengths ``(B,)`` -> ``(B, T, hidden_size * directions)``.

        Outputs at padded frames (``t >= lengths[b]``) are zero.
        """
        batch, steps, _ = x.shape
        product_input = self.projection(x) if self.projection is not None else x
        product_input = self.input_quant(product_input)
        # One product over all frames and both directions, batch-first: the
        # recurrence reads each direction's frames in its own order in place.
        u = self.product(product_input, self.weight_quant(self.weight))
        u = u.view(batch, steps, self.directions, self.num_matrices, self.hidden_size)
        # Without a 4th matrix the highway is the layer input itself: quantized
        # by the product's input point when there is no projection, in float otherwise.
        highway = None
        if not self.highway_matrix:
            highway = x if self.projection is not None else product_input
        v_forget, v_reset, b_forget, b_reset = (
            self.vector_quant(p) for p in (self.v_forget, self.v_reset, self.b_forget, self.b_reset)
        )
        observing = self.state_quant.observing
        h, states = sru_layer_recurrence(
            u, highway, v_forget, v_reset, b_forget, b_reset, lengths, alpha=self.alpha,
            state_quant=self.state_quant.quant_params(u[..., 0, :]), keep_states=observing,
            kernel=self.kernel,
        )  # fmt: skip
        if observing:
            self.state_quant(states)
        return h

    def quant_points(self) -> tuple[QuantPoint, ...]:
        projection = self.projection.quant_points() if self.projection is not None else ()
        return projection + (
            QuantPoint(f"{self.layer}.input", "activation", self.layer),
            QuantPoint(
                f"{self.layer}.weight", "weight", self.layer,
                params=self.weight.numel(), macs_per_frame=self.weight.numel(),
                in_features=self.product_input, out_features=self.weight.shape[0],
                input_point=f"{self.layer}.input",
            ),
        )  # fmt: skip

    def fixed_params(self) -> int:
        return 4 * self.directions * self.hidden_size
