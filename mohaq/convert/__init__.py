"""Making a user's own model quantizable (see :mod:`mohaq.convert.conversion`)."""

from mohaq.convert.conversion import (
    CONVERTED,
    UNSUPPORTED,
    QuantizableLayer,
    make_quantizable,
    model_workload,
    quantizable_layers,
    quantizable_linear,
)
from mohaq.convert.recurrent import (
    ConversionError,
    QuantGRU,
    QuantizableRecurrent,
    QuantLSTM,
    UnsupportedConfigurationError,
)
from mohaq.convert.sru_package import QuantSRU

__all__ = [
    "CONVERTED",
    "UNSUPPORTED",
    "ConversionError",
    "QuantGRU",
    "QuantLSTM",
    "QuantSRU",
    "QuantizableLayer",
    "QuantizableRecurrent",
    "UnsupportedConfigurationError",
    "make_quantizable",
    "model_workload",
    "quantizable_layers",
    "quantizable_linear",
]
