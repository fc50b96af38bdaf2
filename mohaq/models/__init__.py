"""Quantizable recurrent layers (SRU, GRU, LSTM) and the stacked acoustic model."""

from mohaq.models.acoustic import CELLS, GRANULARITIES, OPERATOR_CELLS, AcousticModel
from mohaq.models.gru import GRU_OPERATORS, GRULayer
from mohaq.models.lstm import LSTM_OPERATORS, LSTMLayer
from mohaq.models.quant_linear import QuantLinear
from mohaq.models.sru import SRULayer

__all__ = [
    "CELLS",
    "GRANULARITIES",
    "GRU_OPERATORS",
    "LSTM_OPERATORS",
    "OPERATOR_CELLS",
    "AcousticModel",
    "GRULayer",
    "LSTMLayer",
    "QuantLinear",
    "SRULayer",
]
