"""`mohaq export`: a checkpoint and a bit assignment -> files on disk.

Validation comes first (the assignment against the model's points, the
checkpoint against the config), then the data is prepared, activations are
calibrated on the optimization set as the search's post-training evaluator
does, and the integer model, its manifest and the ONNX model are written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from mohaq.export.exporter import ExportResult, export_model, prepare_model
from mohaq.export.records import resolve_assignment


def run_export(
    system: pl.LightningModule,
    datamodule: Any,
    *,
    checkpoint: str,
    out_dir: str | Path,
    bits: Mapping[str, int] | None = None,
    uniform_bits: int | None = None,
    run_dir: str | Path | None = None,
    index: int | None = None,
    fixed_bits: int = 16,
    recalibrate: bool = False,
    onnx: bool = True,
    rounding: str = "single",
) -> ExportResult:
    """Loads ``checkpoint`` into ``system``, applies the assignment and writes the export.

    Raises:
        ExportError: on a bad assignment source or an incomplete assignment.
        CheckpointNotFoundError, ExportFileNotFoundError: if the checkpoint or
            the search run is missing (FileNotFoundErrors).
        CheckpointMismatchError: if the checkpoint does not fit the config.
    """
    from mohaq.checkpoints import load_model_weights
    from mohaq.export.fixed_point import ROUNDINGS

    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")

    assignment, source = resolve_assignment(
        system.workload(), bits=bits, uniform_bits=uniform_bits, run_dir=run_dir, index=index
    )
    load_model_weights(system, checkpoint)
    system.eval()
    datamodule.prepare_data()
    datamodule.setup("validate")
    note = prepare_model(
        system,
        assignment,
        lambda: datamodule.optimization_dataloader(batch_size=1),
        fixed_bits=fixed_bits,
        recalibrate=recalibrate,
    )
    source = {
        "checkpoint": str(checkpoint),
        "calibration": note,
        "fixed_bits": fixed_bits,
        **source,
    }
    result = export_model(system, out_dir, onnx=onnx, source=source, rounding=rounding)
    sizes = result.manifest["sizes"]
    print(f"exported {source['assignment']} to {result.directory.resolve()}")
    for role, path in result.files.items():
        print(f"  {role}: {path.name} ({path.stat().st_size:,} bytes)")
    print(
        f"  weights + 16-bit extras: {sizes['payload_bytes']:,} bytes packed; cost model memory "
        f"{sizes['cost_model_memory_bytes']:,.1f} bytes (padding {sizes['padding_bytes']:g} bytes; "
        f"scales, constants, tables {sizes['overhead_bytes']['total']:,} bytes)"
    )
    return result
