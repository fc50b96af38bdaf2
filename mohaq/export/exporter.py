"""Exporting a quantized model: integer safetensors, JSON manifest, ONNX QDQ.

:func:`prepare_model` puts a float (or retrained) model in the state a search
scored it in: calibrated activation thresholds on the optimization set (one
utterance per forward, median per-utterance thresholds) and the assignment
applied with 16-bit fixed-precision extras. :func:`export_model` lowers it
and writes the files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mohaq.export.files import write_program
from mohaq.export.lowering import lower_model, unwrap
from mohaq.export.manifest import build_manifest
from mohaq.export.program import IntegerProgram
from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.calibration import activation_quantizers, calibrate_activations

INTEGER_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class ExportResult:
    """Where an export went and what it holds.

    Attributes:
        directory: the output directory.
        files: role (``integer``, ``onnx``, ``manifest``) -> path.
        manifest: the manifest as written.
        program: the integer program.
    """

    directory: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    program: IntegerProgram


def _forward(model: nn.Module, batch: Any) -> Any:
    return model(batch[0], batch[2])


def prepare_model(
    module: nn.Module,
    assignment: BitAssignment,
    calibration_batches: Callable[[], Iterable[Any]] | None,
    *,
    fixed_bits: int = 16,
    recalibrate: bool = False,
) -> str:
    """Calibrates (if needed) and applies ``assignment`` in place; says what it did.

    Activation thresholds are calibrated in float on ``calibration_batches()``
    unless every activation quantizer already holds calibration (a QAT or
    beacon checkpoint) and ``recalibrate`` is False.

    Args:
        module: an AcousticSystem or AcousticModel with its final weights.
        assignment: the bits to export.
        calibration_batches: returns single-utterance batches ``(features, targets, lengths)``.
        fixed_bits: precision of biases, recurrent vectors and states.
        recalibrate: calibrate even if the checkpoint carries calibration.

    Raises:
        ValueError: if calibration is needed and no batches are given.
    """
    model = unwrap(module)
    model.eval()
    calibrated = all(q.has_calibration for q in activation_quantizers(model))
    if recalibrate or not calibrated:
        if calibration_batches is None:
            raise ValueError(
                "the model has no calibration data and no calibration batches were given"
            )
        apply_bit_assignment(model, BitAssignment())
        count = calibrate_activations(model, calibration_batches(), _forward)
        note = f"calibrated on {count} optimization-set utterances"
    else:
        note = "calibration carried by the checkpoint"
    apply_bit_assignment(model, assignment, fixed_bits=fixed_bits)
    return note


def export_model(
    module: nn.Module,
    directory: str | Path,
    *,
    onnx: bool = True,
    source: dict[str, Any] | None = None,
    rounding: str = "single",
) -> ExportResult:
    """Writes the integer model, its manifest and (optionally) the ONNX QDQ model.

    Args:
        module: a calibrated AcousticSystem or AcousticModel with its assignment applied.
        directory: created if needed; existing export files are replaced.
        onnx: also write ``model.onnx``.
        source: provenance recorded in the manifest (checkpoint, run, index).
        rounding: requantization of int32 values, ``"single"`` or ``"gemmlowp"``.

    Raises:
        ExportError: if the model is not fully quantized and calibrated.
    """
    model = unwrap(module)
    model.eval()
    with torch.no_grad():
        program = lower_model(model, rounding=rounding)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {"integer": directory / INTEGER_FILE, "manifest": directory / MANIFEST_FILE}
    stored = write_program(program, files["integer"])
    if onnx:
        from mohaq.export.onnx_qdq import write_onnx

        files["onnx"] = directory / ONNX_FILE
        write_onnx(program, files["onnx"])
    manifest = build_manifest(
        program,
        stored,
        model.workload(),
        file_bytes=files["integer"].stat().st_size,
        files={role: path.name for role, path in files.items() if role != "manifest"},
        source=source,
    )
    files["manifest"].write_text(
        json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    return ExportResult(directory, files, manifest, program)
