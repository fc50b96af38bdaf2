"""Quantizable recurrent layers (SRU, GRU, LSTM) and the stacked acoustic model."""

from mohaq.models.acoustic import AcousticModel
from mohaq.models.gru import GRULayer
from mohaq.models.lstm import LSTMLayer
from mohaq.models.quant_linear import QuantLinear
from mohaq.models.sru import SRULayer

__all__ = ["AcousticModel", "GRULayer", "LSTMLayer", "QuantLinear", "SRULayer"]
