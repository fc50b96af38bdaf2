"""Exporting a user's converted model: every quantized tensor as packed integers.

The toolkit's AcousticSystem is lowered to an integer program whose layer
sequence is known (:mod:`mohaq.export.lowering`). A user's model runs its own
``forward`` around the converted layers, so what ships is the quantized
layers themselves, the format ``mohaq-quantized-layers/1``:

- ``model.safetensors``: every weight and fixed-precision tensor (biases,
  recurrent vectors) packed at its bits (:mod:`mohaq.export.packing`) under
  its quantizer's module path, with ``<name>.scale`` (float32, one per output
  row for per-channel grids); every activation, state and operator point's
  ``<name>.scale`` (and ``<name>.zero_point`` on an asymmetric grid); the
  description (roles, points, bits, shapes, grids, the model's class and
  conversion) as JSON under the metadata key ``mohaq_layers``;
- ``manifest.json``: the same description, the assignment's source, the
  metric on the optimization split when the search's metric is known, and the
  sizes against the cost models' memory.

The integers are read from the quantizers as the search applied them (the
run's PTQ methods, learned roundings included: :mod:`mohaq.export.reading`),
on the tensors each quantizer receives in one forward pass. The file is
read back before the export is reported: each tensor's ``integers x scale``
must equal the fake-quantized tensor the model computes with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mohaq.export.packing import PACKING, pack
from mohaq.export.program import ExportError
from mohaq.export.reading import integer_tensor, runtime_quantization
from mohaq.hardware.base import memory_totals
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import Workload
from mohaq.quant.quantizer import STATIC_ROLES, FakeQuantizer

LAYERS_FORMAT = "mohaq-quantized-layers/1"
DESCRIPTION_KEY = "mohaq_layers"
INTEGER_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
# Largest |integers x scale - fake-quantized| accepted on read-back: float32
# scales times integers of up to 16 bits round off far below one step.
_READBACK_TOLERANCE = 1e-5


@dataclass(frozen=True)
class LayerExport:
    """Where a converted model's export went and what it holds.

    Attributes:
        directory: the output directory.
        files: role (``integer``, ``manifest``) -> path.
        manifest: the manifest as written.
    """

    directory: Path
    files: dict[str, Path]
    manifest: dict[str, Any]


def _static_inputs(
    module: nn.Module, batch: Any, forward: Callable[[nn.Module, Any], Any]
) -> dict[str, list[tuple[Tensor, tuple[Any, ...]]]]:
    """The distinct tensors each weight/fixed quantizer receives in one forward
    pass (a GRU's bias quantizer, for one, quantizes both of its bias vectors)."""
    seen: dict[str, list[tuple[Tensor, tuple[Any, ...]]]] = {}
    keys: dict[str, set[tuple[Any, ...]]] = {}
    handles = []
    for name, quantizer in module.named_modules():
        if isinstance(quantizer, FakeQuantizer) and quantizer.role in STATIC_ROLES:

            def hook(_: nn.Module, inputs: tuple[Any, ...], name: str = name) -> None:
                x = inputs[0]
                key = (x.data_ptr(), tuple(x.shape), x.stride())
                if key not in keys.setdefault(name, set()):
                    keys[name].add(key)
                    seen.setdefault(name, []).append((x.detach().clone(), key[:2]))

            handles.append(quantizer.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            forward(module, batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _parameter_names(module: nn.Module) -> dict[tuple[Any, ...], str]:
    return {(p.data_ptr(), tuple(p.shape)): name for name, p in module.named_parameters()}


def _describe_runtime(quantizer: FakeQuantizer, name: str) -> tuple[dict[str, Any], Tensor, int]:
    if quantizer.grid == "asymmetric":
        if not quantizer.has_calibration:
            raise ExportError(f"{name!r} has no calibration data")
        assert quantizer.bits is not None
        scale, zero_point = quantizer.activation_params(quantizer.bits)
        return {"grid": "asymmetric"}, torch.as_tensor(scale).reshape(1), int(zero_point)
    scale, _ = runtime_quantization(quantizer, name)
    return {"grid": "symmetric"}, torch.tensor([scale]), 0


def collect_quantized(
    module: nn.Module, batch: Any, forward: Callable[[nn.Module, Any], Any]
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]:
    """Integers, scales and the description of every quantizer of ``module``.

    Returns:
        ``(tensors, quantizers, fake_quantized)``: the file's tensors (int64
        integers and float scales), the description per quantizer, and the
        fake-quantized value of each static tensor (for the read-back check).

    Raises:
        ExportError: a quantizer left in float, uncalibrated, or one whose
            tensor the forward pass did not reach.
    """
    inputs = _static_inputs(module, batch, forward)
    parameters = _parameter_names(module)
    tensors: dict[str, Tensor] = {}
    described: dict[str, Any] = {}
    expected: dict[str, Tensor] = {}
    for name, quantizer in module.named_modules():
        if not isinstance(quantizer, FakeQuantizer):
            continue
        label = quantizer.point_name or name
        if quantizer.bits is None:
            raise ExportError(
                f"{label!r} is not quantized (float); the export needs bits for every point"
            )
        entry: dict[str, Any] = {
            "role": quantizer.role,
            "point": quantizer.point_name,
            "bits": int(quantizer.bits),
        }
        if quantizer.role in STATIC_ROLES:
            if name not in inputs:
                raise ExportError(
                    f"{label!r} ({name}) received no tensor in a forward pass of the model; "
                    "only quantizers the model's forward reaches can be exported"
                )
            received = inputs[name]
            for k, (tensor, key) in enumerate(received):
                stored = name if len(received) == 1 else f"{name}.{k}"
                integers, scale, _ = integer_tensor(quantizer, tensor, label)
                tensors[stored] = integers
                tensors[f"{stored}.scale"] = scale.reshape(-1)
                described[stored] = {
                    **entry,
                    "quantizer": name,
                    # the parameter it holds, when the quantizer gets a whole one
                    "parameter": parameters.get(key),
                    "shape": list(integers.shape),
                    "per_channel": scale.numel() > 1,
                }
                with torch.no_grad():
                    expected[stored] = quantizer(tensor).to(torch.float64)
            continue
        grid, scale, zero_point = _describe_runtime(quantizer, label)
        entry.update(grid)
        tensors[f"{name}.scale"] = scale.to(torch.float64)
        if grid["grid"] == "asymmetric":
            entry["zero_point"] = zero_point
        described[name] = entry
    return tensors, described, expected


def _stored(tensors: dict[str, Tensor], described: dict[str, Any]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        entry = described.get(name)
        if entry is not None and "shape" in entry:
            out[name] = pack(tensor, entry["bits"])
        else:
            out[name] = tensor.to(torch.float32)
    return {k: v.contiguous() for k, v in out.items()}


def read_layers(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Reads a ``mohaq-quantized-layers/1`` file: ``(description, tensors)``,
    the integers unpacked to int64 in their shapes and the scales as float64.

    Raises:
        ExportFileNotFoundError: no file at ``path``.
        ExportError: a file of another format.
    """
    from mohaq.export.files import read_described

    return read_described(
        path, file_format=LAYERS_FORMAT, key=DESCRIPTION_KEY, kind="quantized-layers export",
        missing="exported model",
    )  # fmt: skip


def _check_readback(path: Path, expected: dict[str, Tensor]) -> float:
    """The largest difference between the file's ``integers x scale`` and the
    model's fake-quantized tensors; raises ExportError above the tolerance."""
    description, tensors = read_layers(path)
    worst = 0.0
    for name, fake in expected.items():
        entry = description["quantizers"][name]
        scale = tensors[f"{name}.scale"]
        if entry["per_channel"]:
            scale = scale.reshape(-1, *([1] * (len(entry["shape"]) - 1)))
        values = tensors[name].to(torch.float64) * scale
        difference = float((values - fake).abs().max()) if fake.numel() else 0.0
        bound = _READBACK_TOLERANCE * max(1.0, float(fake.abs().max()) if fake.numel() else 1.0)
        if difference > bound:
            raise ExportError(
                f"{name}: the written integers x scale differ from the fake-quantized tensor by "
                f"{difference:.3g} (allowed {bound:.3g})"
            )
        worst = max(worst, difference)
    return worst


def size_report(
    stored: dict[str, Tensor], described: dict[str, Any], workload: Workload, bits: BitAssignment
) -> dict[str, Any]:
    """Packed bytes of the weights and fixed extras against the cost models' memory."""
    packed = {n: e for n, e in described.items() if "shape" in e}
    weight = sum(stored[n].numel() for n, e in packed.items() if e["role"] == "weight")
    fixed = sum(stored[n].numel() for n, e in packed.items() if e["role"] != "weight")
    exact_bits = sum(
        int(torch.tensor(e["shape"]).prod()) * e["bits"] if e["shape"] else e["bits"]
        for e in packed.values()
    )
    scales = sum(t.numel() * t.element_size() for n, t in stored.items() if n not in packed)
    cost = memory_totals(workload, bits)
    return {
        "payload_bytes": weight + fixed,
        "weight_bytes": weight,
        "fixed_bytes": fixed,
        "padding_bytes": weight + fixed - exact_bits / 8,
        "cost_model_memory_bytes": cost["memory_bytes"],
        "cost_model_memory_mb": cost["memory_mb"],
        "overhead_bytes": {"scales_and_zero_points": scales},
    }


def export_converted(
    module: nn.Module,
    directory: str | Path,
    *,
    batch: Any,
    forward: Callable[[nn.Module, Any], Any],
    workload: Workload,
    assignment: BitAssignment,
    model: dict[str, Any],
    source: dict[str, Any] | None = None,
) -> LayerExport:
    """Writes a converted model (assignment applied, calibrated) as quantized layers.

    Args:
        module: the converted model in the state the search scored.
        directory: created if needed; existing export files are replaced.
        batch: one batch of its data, run once to read each weight's quantizer.
        forward: ``(module, batch) -> output``.
        workload: the model's points (for the cost-model memory).
        assignment: the exported bits (recorded).
        model: the model's class, init arguments and conversion (recorded).
        source: provenance (checkpoint, run, index, metric).

    Raises:
        ExportError: as :func:`collect_quantized`, or a read-back mismatch.
    """
    from safetensors.torch import save_file

    module.eval()
    tensors, described, expected = collect_quantized(module, batch, forward)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"integer": directory / INTEGER_FILE, "manifest": directory / MANIFEST_FILE}
    description = {"model": model, "bits": assignment.to_dict(), "quantizers": described}
    stored = _stored(tensors, described)
    save_file(
        stored,
        str(files["integer"]),
        metadata={"format": LAYERS_FORMAT, DESCRIPTION_KEY: json.dumps(description)},
    )
    worst = _check_readback(files["integer"], expected)
    sizes = size_report(stored, described, workload, assignment)
    sizes["file_bytes"] = files["integer"].stat().st_size
    manifest = {
        "format": LAYERS_FORMAT,
        "files": {"integer": INTEGER_FILE},
        "source": source or {},
        **description,
        "packing": {"layout": PACKING, "dtype": "uint8", "bytes": "ceil(count * bits / 8)"},
        "dequantization": "value = integer * scale (per output row when per_channel); "
        "asymmetric activations: (q - zero_point) * scale on unsigned q",
        "readback_max_difference": worst,
        "sizes": sizes,
    }
    files["manifest"].write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return LayerExport(directory, files, manifest)


__all__ = [
    "LAYERS_FORMAT",
    "LayerExport",
    "collect_quantized",
    "export_converted",
    "read_layers",
    "size_report",
]
