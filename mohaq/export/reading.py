"""Reading integers and scales out of a fake-quantized model's quantizers.

Only the quantizers' public API is used: ``quant_params`` gives the scale and
bits a quantizer applies, and calling it gives the fake-quantized tensor.
Integers are recovered from that output (``round(fq / scale)``), so whatever
rounding the quantizer applies (nearest, or learned rounding) is what is
exported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mohaq.export.program import ExportError
from mohaq.quant.quantizer import FakeQuantizer

# How far (in steps) a fake-quantized value may sit from scale * integer: float32
# round-off of a 16-bit integer times its scale stays below 0.002.
_INTEGER_TOLERANCE = 0.01


def _label(quantizer: FakeQuantizer, name: str) -> str:
    return quantizer.point_name or name


def integer_tensor(
    quantizer: FakeQuantizer, tensor: Tensor, name: str
) -> tuple[Tensor, Tensor, int]:
    """The integers, scale and bits that ``quantizer`` turns ``tensor`` into.

    Returns:
        ``(integers, scale, bits)``: int64 integers shaped like ``tensor``; a
        float64 scale, scalar or one per row (per-channel quantizers along
        axis 0).

    Raises:
        ExportError: if the quantizer is float, per-channel along another axis,
            or its output is not on its integer grid.
    """
    with torch.no_grad():
        params = quantizer.quant_params(tensor)
        if params is None:
            raise ExportError(
                f"{_label(quantizer, name)!r} is not quantized (float); integer export needs bits "
                "for every tensor"
            )
        scale, bits = params
        scale = torch.as_tensor(scale, dtype=torch.float64)
        if scale.numel() > 1:
            if scale.numel() != tensor.shape[0] or scale.reshape(-1).shape[0] != scale.shape[0]:
                raise ExportError(
                    f"{_label(quantizer, name)!r}: per-channel scales are supported along axis 0 "
                    f"(one per output row); got scale shape {tuple(scale.shape)} for a tensor of "
                    f"shape {tuple(tensor.shape)}"
                )
            scale = scale.reshape(-1)
        quantized = quantizer(tensor.detach()).to(torch.float64)
        broadcast = scale.reshape(-1, *([1] * (tensor.dim() - 1))) if scale.numel() > 1 else scale
        levels = quantized / broadcast
        integers = torch.round(levels)
    if levels.numel() and float((levels - integers).abs().max()) > _INTEGER_TOLERANCE:
        raise ExportError(
            f"{_label(quantizer, name)!r}: the quantizer's output is not scale x integer"
        )
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    integers = integers.to(torch.int64)
    if integers.numel() and (int(integers.min()) < low or int(integers.max()) > high):
        raise ExportError(f"{_label(quantizer, name)!r}: integers outside the {bits}-bit range")
    return integers, scale, int(bits)


def runtime_quantization(quantizer: FakeQuantizer, name: str) -> tuple[float, int]:
    """``(scale, bits)`` of an activation or state quantizer from its calibration.

    Raises:
        ExportError: if the quantizer is float or has no calibration data.
    """
    label = _label(quantizer, name)
    if quantizer.bits is None:
        raise ExportError(
            f"{label!r} is not quantized (float); integer export needs bits for every tensor"
        )
    if not quantizer.has_calibration:
        raise ExportError(
            f"{label!r} has no calibration data; calibrate the activations on the optimization "
            "set first (mohaq.quant.calibration.calibrate_activations)"
        )
    params = quantizer.quant_params()
    assert params is not None
    scale, bits = params
    scale = torch.as_tensor(scale, dtype=torch.float64)
    if scale.numel() != 1:
        raise ExportError(f"{label!r}: run-time tensors need one scale; got {scale.numel()}")
    return float(scale), int(bits)


def calibrated_threshold(quantizer: FakeQuantizer, bits: int, name: str) -> float:
    """The calibrated clipping threshold of ``quantizer`` at ``bits``.

    Raises:
        ExportError: if the quantizer has no calibration data.
    """
    if not quantizer.has_calibration:
        raise ExportError(f"{_label(quantizer, name)!r} has no calibration data")
    return float(quantizer.threshold_for(bits))
