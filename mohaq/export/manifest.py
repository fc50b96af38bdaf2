"""The JSON manifest of an exported model: points, bits, shapes, packing and sizes.

Sizes are split the way the cost models count memory:

- ``payload``: the packed quantized weights plus the fixed-precision extras
  (biases, recurrent vectors) at their 16 bits: what
  :func:`mohaq.hardware.base.memory_totals` prices as ``memory_bytes``, plus
  ``padding`` (each tensor is padded to a whole byte);
- ``overhead``: what deployment needs beyond that: scales, requantization
  constants, lookup tables and the safetensors header with the description.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mohaq.export.packing import PACKING
from mohaq.export.program import FORMAT, IntegerProgram
from mohaq.hardware.base import memory_totals
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def size_report(
    program: IntegerProgram,
    stored: dict[str, Tensor],
    workload: Workload,
    file_bytes: int | None = None,
) -> dict[str, Any]:
    """Byte counts of the stored tensors against the cost models' memory.

    Args:
        program: the integer model.
        stored: the tensors as written (:func:`mohaq.export.files.file_tensors`).
        workload: the model's points, for the cost-model memory.
        file_bytes: the file's size on disk, if written.
    """
    quantizers = program.config["quantizers"]
    packed = set(program.quantized_names(stored=True))
    weights = sum(_nbytes(stored[n]) for n in packed if quantizers[n]["role"] == "weight")
    fixed = sum(_nbytes(stored[n]) for n in packed if quantizers[n]["role"] != "weight")
    exact_bits = sum(program.tensors[n].numel() * program.bits(n) for n in packed)
    payload = weights + fixed
    groups = {"scales": 0, "requantization": 0, "lookup_tables": 0}
    for name, tensor in stored.items():
        if name in packed:
            continue
        if name.endswith(".scale"):
            groups["scales"] += _nbytes(tensor)
        elif name.endswith((".m0", ".shift")):
            groups["requantization"] += _nbytes(tensor)
        elif name.startswith("lut."):
            groups["lookup_tables"] += _nbytes(tensor)
    assignment = BitAssignment(program.config["bits"])
    cost = memory_totals(workload, assignment)
    report: dict[str, Any] = {
        "payload_bytes": payload,
        "weight_bytes": weights,
        "fixed_bytes": fixed,
        "padding_bytes": payload - exact_bits / 8,
        "cost_model_memory_bytes": cost["memory_bytes"],
        "cost_model_memory_mb": cost["memory_mb"],
        "overhead_bytes": dict(groups, total=sum(groups.values())),
    }
    if file_bytes is not None:
        report["file_bytes"] = file_bytes
        report["overhead_bytes"]["header_and_description"] = (
            file_bytes - payload - sum(groups.values())
        )
    return report


def build_manifest(
    program: IntegerProgram,
    stored: dict[str, Tensor],
    workload: Workload,
    *,
    file_bytes: int | None = None,
    files: dict[str, str] | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest: what was exported, at which bits, in which shapes, and its size.

    Args:
        program: the integer model.
        stored: the tensors as written.
        workload: the model's quantization points.
        file_bytes: the safetensors file's size.
        files: role -> file name (``integer``, ``onnx``).
        source: where the model and assignment came from (checkpoint, run, index).
    """
    quantizers = program.config["quantizers"]
    points = []
    for point in workload.points:
        entry = quantizers.get(point.name, {})
        item: dict[str, Any] = {
            "name": point.name,
            "kind": point.kind,
            "layer": point.layer,
            "bits": entry.get("bits"),
        }
        if point.name in stored:
            item.update(
                shape=entry["shape"], params=point.params, stored_bytes=_nbytes(stored[point.name])
            )
        scale = program.tensors.get(f"{point.name}.scale")
        if scale is not None and scale.numel() == 1:
            item["scale"] = float(scale)
        points.append(item)
    extras = [
        {
            "name": name,
            "role": entry["role"],
            "bits": entry["bits"],
            **({"shape": entry["shape"]} if "shape" in entry else {}),
        }
        for name, entry in quantizers.items()
        if not entry["point"]
    ]
    return {
        "format": FORMAT,
        "files": files or {},
        "source": source or {},
        "model": program.config["model"],
        "bits": program.config["bits"],
        "points": points,
        "fixed_precision": extras,
        "packing": {
            "layout": PACKING,
            "dtype": "uint8",
            "bytes_per_tensor": "ceil(count * bits / 8)",
            "example": "4 bits: byte j = value 2j (low nibble) | value 2j+1 (high nibble)",
        },
        "requantization": {
            "multiplier": "M = m0 * 2^(shift - 31), m0 int32 in [2^30, 2^31), shift int8",
            "rounding": program.rounding,
            "single": "round(x * m0 / 2^(31 - shift)) in 64 bits, half away from zero",
            "gemmlowp": "rounding doubling high multiply, then rounding right shift (int32 only)",
        },
        "biases": "stored at their fixed bits (as the cost models count them) and moved to the "
        "accumulator scale s_w * s_x (int32/int64) by their <layer>.rq.bias_* multipliers when loaded",
        "lookup_tables": program.config.get("luts", {}),
        "float_steps": [
            "feature input quantization round(x / s_x)",
            "output scores acc * s_w * s_x",
        ],
        "layers": program.config["layers"],
        "sizes": size_report(program, stored, workload, file_bytes),
    }
