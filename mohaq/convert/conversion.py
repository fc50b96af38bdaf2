"""Making a user's model quantizable: one verb that swaps torch layers in place.

:func:`make_quantizable` walks any ``nn.Module`` (a LightningModule too) and
replaces every ``torch.nn.GRU``, ``torch.nn.LSTM`` and ``torch.nn.Linear``
(and the `sru` package's ``SRU``) with the toolkit's quantizable layer
(:class:`~mohaq.convert.recurrent.QuantGRU`,
:class:`~mohaq.convert.recurrent.QuantLSTM`,
:class:`~mohaq.models.quant_linear.QuantLinear`,
:class:`~mohaq.convert.sru_package.QuantSRU`), weights copied. With every
quantizer off the converted model computes what the original computed.

Quantization points are named by module path: a ``nn.Linear`` at
``head.classifier`` has ``head.classifier.weight`` and
``head.classifier.input``; a one-layer ``nn.GRU`` at ``encoder`` has
``encoder.weight`` and ``encoder.input`` (granularity ``"layer"``) or
``encoder.w_ih``, ``encoder.x``, ``encoder.r``, ... (``"operator"``); layer
``k`` of a multi-layer one is ``encoder.l<k>``. :func:`model_workload` lists
them, with parameters and MACs per step, as the
:class:`~mohaq.quant.points.Workload` every cost model prices.

Only these exact classes are converted: subclasses may override ``forward``
(``nn.MultiheadAttention``'s output projection is one) and are left alone.
The toolkit's own layers (:class:`~mohaq.models.sru.SRULayer`, layers
converted before) are kept with their points, so converting twice changes
nothing. Other recurrent modules (``nn.RNN``, the ``*Cell`` modules) raise
:class:`~mohaq.convert.recurrent.UnsupportedConfigurationError` unless their
path is in ``skip``.

Convert before an optimizer or a Trainer holds the model's parameters: the
converted layers have parameters of their own (torch's per-gate, per-direction
tensors become one ``[W_ih | W_hh]`` matrix per layer).

MACs per step: a linear layer counts ``in x out`` per step of the sequence,
which is right for layers applied to every frame; for a classifier applied
once per sequence, name it in ``model_workload(once_per_sequence=...)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from mohaq.convert.recurrent import (
    ConversionError,
    QuantGRU,
    QuantizableRecurrent,
    QuantLSTM,
    UnsupportedConfigurationError,
    check_choice,
)
from mohaq.convert.sru_package import QuantSRU, is_sru_module
from mohaq.models.gru import Granularity
from mohaq.models.native import KERNEL_CHOICES, KernelChoice
from mohaq.models.quant_linear import QuantLinear
from mohaq.models.recurrent_base import GRANULARITIES
from mohaq.quant.clipping import CLIPPING_METHODS, ClippingMethod
from mohaq.quant.points import QuantPoint, Workload

#: torch classes that are swapped, by their replacement.
CONVERTED: dict[type[nn.Module], type[nn.Module]] = {
    nn.GRU: QuantGRU,
    nn.LSTM: QuantLSTM,
    nn.Linear: QuantLinear,
}
#: torch recurrent modules that have no quantizable counterpart.
UNSUPPORTED: tuple[type[nn.Module], ...] = (nn.RNN, nn.RNNCell, nn.GRUCell, nn.LSTMCell)
#: Fixed-precision extras (biases) are stored at MOHAQ's 16 bits.
FIXED_BITS = 16


@runtime_checkable
class QuantizableLayer(Protocol):
    """A layer that lists its quantization points and its fixed-precision extras."""

    def quant_points(self) -> tuple[QuantPoint, ...]: ...

    def fixed_params(self) -> int: ...


def _point_prefix(path: str, module: nn.Module) -> str:
    """The module's path, or its class name for the root module."""
    return path or type(module).__name__.lower()


@torch.no_grad()
def quantizable_linear(
    module: nn.Linear,
    *,
    name: str,
    weight_clipping: ClippingMethod = "mmse",
    activation_clipping: ClippingMethod = "mmse",
) -> QuantLinear:
    """The :class:`QuantLinear` copy of ``module`` (weights, device, dtype, mode)."""
    converted = QuantLinear(
        module.in_features, module.out_features, layer=name, bias=module.bias is not None,
        weight_clipping=weight_clipping, activation_clipping=activation_clipping,
    )  # fmt: skip
    converted.to(device=module.weight.device, dtype=module.weight.dtype)
    converted.weight.copy_(module.weight)
    if module.bias is not None:
        assert converted.bias is not None
        converted.bias.copy_(module.bias)
    converted.train(module.training)
    return converted


def _convertible(module: nn.Module) -> bool:
    return type(module) in CONVERTED or is_sru_module(module)


def _convert_one(
    path: str,
    module: nn.Module,
    *,
    granularity: Granularity,
    weight_clipping: ClippingMethod,
    activation_clipping: ClippingMethod,
    kernel: KernelChoice,
) -> nn.Module:
    name = _point_prefix(path, module)
    if is_sru_module(module):
        return QuantSRU.from_float(
            module, name=name, weight_clipping=weight_clipping,
            activation_clipping=activation_clipping, kernel=kernel,
        )  # fmt: skip
    if type(module) is nn.Linear:
        return quantizable_linear(
            module,
            name=name,
            weight_clipping=weight_clipping,
            activation_clipping=activation_clipping,
        )
    replacement = CONVERTED[type(module)]
    assert issubclass(replacement, QuantizableRecurrent)
    assert isinstance(module, nn.RNNBase)
    return replacement.from_float(
        module, name=name, granularity=granularity, weight_clipping=weight_clipping,
        activation_clipping=activation_clipping, kernel=kernel,
    )  # fmt: skip


def make_quantizable(
    module: nn.Module,
    *,
    granularity: Granularity = "layer",
    skip: Iterable[str] = (),
    weight_clipping: ClippingMethod = "mmse",
    activation_clipping: ClippingMethod = "mmse",
    kernel: KernelChoice = "auto",
) -> nn.Module:
    """Swaps ``nn.GRU``, ``nn.LSTM``, ``nn.Linear`` (and ``sru.SRU``) inside
    ``module`` for quantizable layers, in place (see the module docstring).

    Args:
        module: any model, e.g. a LightningModule; changed in place.
        granularity: ``"layer"`` (a weight and an input point per layer, MOHAQ)
            or ``"operator"`` (every operand inside GRU and LSTM cells, Miccini
            et al.); linear layers always have a weight and an input point.
        skip: module paths (as ``named_modules`` gives them) left as they are,
            with everything inside them.
        weight_clipping, activation_clipping: clipping methods of the quantizers.
        kernel: how recurrent loops run (``"auto"``, ``"cpu"``, ``"script"``).

    Returns:
        ``module`` itself, or its replacement when ``module`` is itself a
        converted class (e.g. a bare ``nn.GRU``).

    Raises:
        ConversionError: on a bad argument or a ``skip`` path that names no module.
        UnsupportedConfigurationError: for ``nn.RNN``, the ``*Cell`` modules or
            an LSTM with ``proj_size``, naming the module path and what is allowed.
    """
    check_choice("granularity", granularity, GRANULARITIES)
    check_choice("weight_clipping", weight_clipping, CLIPPING_METHODS)
    check_choice("activation_clipping", activation_clipping, CLIPPING_METHODS)
    check_choice("kernel", kernel, KERNEL_CHOICES)
    skipped = set(skip)
    paths = {path for path, _ in module.named_modules()}
    unknown = sorted(skipped - paths)
    if unknown:
        raise ConversionError(f"skip names no module: {unknown}; module paths: {sorted(paths)}")
    options = dict(
        granularity=granularity, weight_clipping=weight_clipping,
        activation_clipping=activation_clipping, kernel=kernel,
    )  # fmt: skip
    if _convertible(module) and "" not in skipped:
        return _convert_one("", module, **options)  # type: ignore[arg-type]
    _convert_children(module, "", skipped, options)
    return module


def _convert_children(
    parent: nn.Module, prefix: str, skipped: set[str], options: dict[str, str]
) -> None:
    if prefix in skipped:
        return
    for child_name, child in list(parent.named_children()):
        path = f"{prefix}.{child_name}" if prefix else child_name
        if path in skipped:
            continue
        if isinstance(child, QuantizableLayer):
            continue  # the toolkit's own layers (SRU, or converted already) keep their points
        if _convertible(child):
            setattr(parent, child_name, _convert_one(path, child, **options))  # type: ignore[arg-type]
        elif isinstance(child, UNSUPPORTED):
            raise UnsupportedConfigurationError(
                f"module {path!r} is a torch.nn.{type(child).__name__}, which has no "
                f"quantizable counterpart; convertible: "
                f"{', '.join('torch.nn.' + c.__name__ for c in CONVERTED)}; "
                f"pass skip=[{path!r}] to keep it in float"
            )
        else:
            _convert_children(child, path, skipped, options)


def quantizable_layers(module: nn.Module) -> list[tuple[str, QuantizableLayer]]:
    """The outermost quantizable layers in ``module``, with their paths, in module order."""
    found: list[tuple[str, QuantizableLayer]] = []

    def visit(current: nn.Module, path: str) -> None:
        if isinstance(current, QuantizableLayer):
            found.append((path, current))
            return
        for child_name, child in current.named_children():
            visit(child, f"{path}.{child_name}" if path else child_name)

    visit(module, "")
    return found


def model_workload(
    module: nn.Module,
    *,
    fixed_bits: int = FIXED_BITS,
    once_per_sequence: Iterable[str] = (),
    steps_per_sequence: int | None = None,
) -> Workload:
    """The :class:`Workload` of a converted model: every quantizable layer's
    points in module order, and their biases as fixed-precision extras.

    Args:
        module: the converted model.
        fixed_bits: precision of the biases.
        once_per_sequence: paths of linear layers that run once per sequence
            (a classifier on the last hidden state), not once per step: their
            MACs per step are their MACs spread over ``steps_per_sequence``
            steps (rounded up).
        steps_per_sequence: steps of a sequence (e.g. frames of a clip); needed
            with ``once_per_sequence``.

    Raises:
        ConversionError: if ``module`` has no quantizable layer (convert it
            with :func:`make_quantizable` first), or ``once_per_sequence`` names
            no quantizable linear layer or comes without ``steps_per_sequence``.
    """
    layers = quantizable_layers(module)
    if not layers:
        raise ConversionError(
            f"{type(module).__name__} has no quantizable layers; call make_quantizable first"
        )
    amortized = set(once_per_sequence)
    linear = {path for path, layer in layers if isinstance(layer, QuantLinear)}
    unknown = sorted(amortized - linear)
    if unknown:
        raise ConversionError(
            f"once_per_sequence names no quantizable linear layer: {unknown}; "
            f"linear layers: {sorted(linear)}"
        )
    if amortized and (steps_per_sequence is None or steps_per_sequence < 1):
        raise ConversionError(
            "once_per_sequence needs steps_per_sequence >= 1 (the steps its MACs are spread "
            f"over), got {steps_per_sequence!r}"
        )
    points: list[QuantPoint] = []
    for path, layer in layers:
        for point in layer.quant_points():
            if path in amortized and point.macs_per_frame > 0:
                assert steps_per_sequence is not None
                spread = math.ceil(point.macs_per_frame / steps_per_sequence)
                point = dataclasses.replace(point, macs_per_frame=spread)
            points.append(point)
    fixed = sum(layer.fixed_params() for _, layer in layers)
    return Workload(points=tuple(points), fixed_params=fixed, fixed_bits=fixed_bits)


__all__ = [
    "CONVERTED",
    "UNSUPPORTED",
    "ConversionError",
    "QuantizableLayer",
    "UnsupportedConfigurationError",
    "make_quantizable",
    "model_workload",
    "quantizable_layers",
    "quantizable_linear",
]
