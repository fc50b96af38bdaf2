"""Integer-only inference and deployable export of a quantized model."""

from mohaq.export.lowering import lower_model
from mohaq.export.program import Domain, ExportError, IntegerProgram
from mohaq.export.runtime import IntegerAcousticModel

__all__ = ["Domain", "ExportError", "IntegerAcousticModel", "IntegerProgram", "lower_model"]
