"""The integer model as data: named tensors plus a JSON description.

An :class:`IntegerProgram` is what the exporter writes and what the integer
runtime reads. It holds

- quantized tensors (weights, biases, recurrent vectors) as integers with
  their bits and scale; ``config["quantizers"]`` lists them, and the
  run-time tensors that have only a scale (activations, states, operator
  outputs, the carries between layers and steps);
- requantization constants: for each rescaling ``M`` a Q31 multiplier
  ``<name>.m0`` and an exponent ``<name>.shift``;
- the lookup tables ``lut.sigmoid`` and ``lut.tanh``;
- ``config["layers"]``: the layer sequence and what each layer needs.

Scales are float64 here and float32 in files; the integer runtime never reads
a scale except the feature input's and the output's (see
:mod:`mohaq.export.runtime`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from mohaq.export.fixed_point import ROUNDINGS, QuantizedMultiplier, quantize_multiplier
from mohaq.export.lut import LookupTable, table_from_values

FORMAT = "mohaq-integer-model/1"
TensorRole = Literal["weight", "fixed", "activation", "state", "operator", "carry"]


class ExportError(ValueError):
    """A model, assignment or file that cannot be turned into an integer model."""


class ExportFileNotFoundError(ExportError, FileNotFoundError):
    """An exported model file or a search run directory that is not there."""


@dataclass(frozen=True)
class Domain:
    """The integer domain of a tensor passed between layers: value = scale * q, ``bits`` wide."""

    name: str
    scale: float
    bits: int


class IntegerProgram:
    """Named tensors and the description of an integer-only model.

    Args:
        config: the JSON description (``layers``, ``quantizers``, ``model``, ...).
        tensors: name -> tensor.
    """

    def __init__(
        self, config: dict[str, Any] | None = None, tensors: dict[str, Tensor] | None = None
    ):
        self.config: dict[str, Any] = config if config is not None else {"format": FORMAT}
        self.config.setdefault("quantizers", {})
        self.config.setdefault("layers", [])
        self.tensors: dict[str, Tensor] = tensors if tensors is not None else {}

    # -- building ----------------------------------------------------------------------
    def add_quantized(
        self, name: str, values: Tensor, bits: int, scale: Tensor, *, role: TensorRole, point: bool
    ) -> None:
        """An integer tensor stored at ``bits`` with its scale (scalar or one per row)."""
        self._add_entry(name, bits, scale, role=role, point=point)
        self.config["quantizers"][name]["shape"] = list(values.shape)
        self.tensors[name] = values.to(torch.int64)

    def add_scale(
        self, name: str, bits: int, scale: float | Tensor, *, role: TensorRole, point: bool
    ) -> None:
        """A run-time tensor's quantization: its bits and scale, no stored values."""
        self._add_entry(name, bits, torch.as_tensor(scale), role=role, point=point)

    def _add_entry(
        self, name: str, bits: int, scale: Tensor, *, role: TensorRole, point: bool
    ) -> None:
        if name in self.config["quantizers"]:
            raise ExportError(f"tensor {name!r} is registered twice")
        self.config["quantizers"][name] = {"bits": int(bits), "role": role, "point": bool(point)}
        self.tensors[f"{name}.scale"] = (
            scale.detach().to(torch.float64).reshape(-1 if scale.numel() > 1 else ())
        )

    def add_multiplier(self, name: str, real: float | Tensor) -> None:
        """Stores ``real`` as a Q31 multiplier and exponent; equal entries collapse to one."""
        real = torch.as_tensor(real, dtype=torch.float64)
        if real.numel() > 1 and bool((real == real.flatten()[0]).all()):
            real = real.flatten()[0]
        multiplier = quantize_multiplier(real)
        self.tensors[f"{name}.m0"] = multiplier.m0
        self.tensors[f"{name}.shift"] = multiplier.shift

    def add_lookup_table(self, table: LookupTable) -> None:
        self.tensors[f"lut.{table.function}"] = table.values
        self.config.setdefault("luts", {})[table.function] = {
            "input_frac_bits": table.input_frac_bits,
            "range_log2": table.range_log2,
            "segments": int(table.values.numel() - 1),
            "output_frac_bits": table.output_frac_bits,
        }

    @property
    def rounding(self) -> str:
        """How int32 values are requantized: ``"single"`` or ``"gemmlowp"``
        (see :func:`mohaq.export.fixed_point.requantize`)."""
        rounding = self.config.get("rounding", "single")
        if rounding not in ROUNDINGS:
            raise ExportError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")
        return rounding

    def domain(self, name: str) -> Domain:
        """The per-tensor domain of a registered run-time tensor."""
        scale = self.scale(name)
        if scale.numel() != 1:
            raise ExportError(f"{name!r} has per-channel scales; a layer input needs one scale")
        return Domain(name, float(scale), self.bits(name))

    # -- reading -----------------------------------------------------------------------
    def _require(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise ExportError(f"the integer model has no tensor {name!r}") from None

    def values(self, name: str) -> Tensor:
        return self._require(name).to(torch.int64)

    def scale(self, name: str) -> Tensor:
        return self._require(f"{name}.scale").to(torch.float64)

    def bits(self, name: str) -> int:
        try:
            return int(self.config["quantizers"][name]["bits"])
        except KeyError:
            raise ExportError(f"the integer model has no quantizer {name!r}") from None

    def multiplier(self, name: str) -> QuantizedMultiplier:
        return QuantizedMultiplier(
            self._require(f"{name}.m0").to(torch.int64),
            self._require(f"{name}.shift").to(torch.int64),
        )

    def lookup_table(self, function: str) -> LookupTable:
        spec = self.config.get("luts", {}).get(function)
        if spec is None:
            raise ExportError(f"the integer model has no {function} table")
        return table_from_values(
            function,
            self._require(f"lut.{function}"),
            input_frac_bits=int(spec["input_frac_bits"]),
            range_log2=int(spec["range_log2"]),
            output_frac_bits=int(spec["output_frac_bits"]),
        )

    def quantized_names(self, *, stored: bool) -> list[str]:
        """Quantizer names with (``stored``) or without stored integer values."""
        return [name for name in self.config["quantizers"] if (name in self.tensors) == stored]
