"""Quantization: points, bit assignments, fake quantization, clipping, calibration."""

from mohaq.quant.apply import (
    apply_bit_assignment,
    current_bit_assignment,
    fixed_quantizers,
    quantizers,
)
from mohaq.quant.assignment import (
    FLOAT_BITS,
    MAX_BITS,
    MIN_BITS,
    BitAssignment,
    BitAssignmentError,
)
from mohaq.quant.calibration import (
    activation_quantizers,
    all_quantizers,
    calibrate_activations,
    observing,
)
from mohaq.quant.clipping import (
    CLIPPING_METHODS,
    ClippingMethod,
    abs_histogram,
    estimate_threshold,
    minmax_threshold,
    mmse_threshold,
    mmse_threshold_from_histogram,
    percentile_from_histogram,
    percentile_threshold,
)
from mohaq.quant.functional import fake_quantize, qmax, qmin, scale_for
from mohaq.quant.points import POINT_KINDS, PointKind, QuantPoint, Workload
from mohaq.quant.quantizer import QUANTIZER_ROLES, FakeQuantizer, QuantizerRole

__all__ = [
    "CLIPPING_METHODS",
    "FLOAT_BITS",
    "MAX_BITS",
    "MIN_BITS",
    "POINT_KINDS",
    "QUANTIZER_ROLES",
    "BitAssignment",
    "BitAssignmentError",
    "ClippingMethod",
    "FakeQuantizer",
    "PointKind",
    "QuantPoint",
    "QuantizerRole",
    "Workload",
    "abs_histogram",
    "activation_quantizers",
    "all_quantizers",
    "apply_bit_assignment",
    "calibrate_activations",
    "current_bit_assignment",
    "estimate_threshold",
    "fake_quantize",
    "fixed_quantizers",
    "minmax_threshold",
    "mmse_threshold",
    "mmse_threshold_from_histogram",
    "observing",
    "percentile_from_histogram",
    "percentile_threshold",
    "qmax",
    "qmin",
    "quantizers",
    "scale_for",
]
