"""Writing an integer program to safetensors (packed) and reading it back.

Tensor names in the file:

- a quantized tensor (weight, bias, recurrent vector) under its own name, as
  uint8 bytes packed at its bit width (:mod:`mohaq.export.packing`);
- ``<name>.scale``: float32 scale of every quantized and run-time tensor;
- ``<rescaling>.m0`` (int32, Q31) and ``<rescaling>.shift`` (int8): the
  requantization constants;
- ``lut.sigmoid``, ``lut.tanh``: int32 tables (fraction bits in the description);
- ``<layer>.output.scale``: the float32 dequantization of the output scores.

The program's description (layers, quantizers with bits and shapes, tables)
is the JSON string under the metadata key ``mohaq_program``, so the file alone
rebuilds the integer model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mohaq.export.packing import pack, unpack
from mohaq.export.program import FORMAT, ExportError, ExportFileNotFoundError, IntegerProgram

try:
    from safetensors.torch import load_file, safe_open, save_file
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "safetensors is needed to export or score exported models: pip install 'mohaq[export]'"
    ) from error

PROGRAM_KEY = "mohaq_program"
FORMAT_KEY = "format"


def file_tensors(program: IntegerProgram) -> dict[str, Tensor]:
    """The tensors as stored: packed integers, float32 scales, int32/int8 constants, int32 tables."""
    stored = set(program.quantized_names(stored=True))
    out: dict[str, Tensor] = {}
    for name, tensor in program.tensors.items():
        if name in stored:
            out[name] = pack(tensor, program.bits(name))
        elif name.endswith(".m0"):
            out[name] = tensor.to(torch.int32)
        elif name.endswith(".shift"):
            out[name] = tensor.to(torch.int8)
        elif name.startswith("lut."):
            out[name] = tensor.to(torch.int32)
        elif tensor.is_floating_point():
            out[name] = tensor.to(torch.float32)
        else:
            raise ExportError(f"no storage rule for tensor {name!r} ({tensor.dtype})")
    return {name: value.contiguous() for name, value in out.items()}


def write_program(program: IntegerProgram, path: str | Path) -> dict[str, Tensor]:
    """Writes ``program`` to a safetensors file; returns the stored tensors."""
    tensors = file_tensors(program)
    metadata = {FORMAT_KEY: FORMAT, PROGRAM_KEY: json.dumps(program.config, sort_keys=True)}
    save_file(tensors, str(path), metadata=metadata)
    return tensors


def read_described(
    path: str | Path, *, file_format: str, key: str, kind: str, missing: str
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A safetensors file of ``file_format`` whose JSON description (with a
    ``quantizers`` table) is under the metadata ``key``: ``(description,
    tensors)``, each quantizer's packed integers unpacked to int64 in its
    shape, other floating tensors as float64 and integer ones as int64.

    Raises:
        ExportFileNotFoundError: no file at ``path`` (``"<missing> file ... does not exist"``).
        ExportError: an unreadable file, or one of another format (``kind`` names the expected).
    """
    path = Path(path)
    if not path.is_file():
        raise ExportFileNotFoundError(f"{missing} file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        stored = load_file(str(path))
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise ExportError(f"cannot read {str(path)!r} as safetensors: {error}") from error
    if metadata.get(FORMAT_KEY) != file_format or key not in metadata:
        raise ExportError(
            f"{str(path)!r} is not a MOHAQ {kind} (format {metadata.get(FORMAT_KEY)!r}, "
            f"expected {file_format!r})"
        )
    description = json.loads(metadata[key])
    tensors: dict[str, Tensor] = {}
    for name, tensor in stored.items():
        entry = description["quantizers"].get(name)
        if entry is not None and "shape" in entry:
            shape = entry["shape"]
            count = int(torch.tensor(shape).prod()) if shape else 1
            tensors[name] = unpack(tensor, int(entry["bits"]), count).view(shape)
        elif tensor.is_floating_point():
            tensors[name] = tensor.to(torch.float64)
        else:
            tensors[name] = tensor.to(torch.int64)
    return description, tensors


def read_program(path: str | Path) -> IntegerProgram:
    """Reads a file written by :func:`write_program`.

    Raises:
        ExportFileNotFoundError: if there is no file at ``path`` (a FileNotFoundError).
        ExportError: if the file is not an integer model of this format.
    """
    config, tensors = read_described(
        path, file_format=FORMAT, key=PROGRAM_KEY, kind="integer model", missing="integer model"
    )
    return IntegerProgram(config, tensors)
