"""Packed safetensors files, the manifest, and exported size against the cost models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import example_batch, make_model
from safetensors.torch import save_file

from mohaq.export import ExportError, IntegerAcousticModel, lower_model
from mohaq.export.exporter import export_model
from mohaq.export.files import read_program, write_program
from mohaq.hardware.base import memory_totals
from mohaq.quant.apply import current_bit_assignment


def test_the_file_rebuilds_the_same_integer_model(tmp_path: Path) -> None:
    model = make_model("gru", "operator", lambda name: 4 if "w_" in name else 8)
    program = lower_model(model)
    stored = write_program(program, tmp_path / "model.safetensors")
    assert stored["gru0.w_ih"].dtype == torch.uint8
    assert (
        stored["gru0.w_ih"].numel() == program.values("gru0.w_ih").numel() // 2
    )  # two 4-bit values a byte
    loaded = read_program(tmp_path / "model.safetensors")
    for name in program.quantized_names(stored=True):
        assert torch.equal(loaded.values(name), program.values(name)), name
    features, lengths = example_batch()
    assert torch.equal(
        IntegerAcousticModel(loaded)(features, lengths),
        IntegerAcousticModel(program)(features, lengths),
    )


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ExportError, match="not a MOHAQ integer model"):
        read_program(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_program(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    "bits", [8, lambda name: {0: 2, 1: 4, 2: 8}[len(name) % 3] if name.endswith("weight") else 8]
)
def test_exported_size_equals_the_cost_model_memory_plus_stated_padding(
    tmp_path: Path, bits
) -> None:
    # Hidden 7: tensor sizes that are not whole bytes at 2 and 4 bits.
    model = make_model("sru", "layer", bits, hidden=7)
    result = export_model(model, tmp_path, onnx=False, source={"assignment": "test"})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    sizes = manifest["sizes"]
    cost = memory_totals(model.workload(), current_bit_assignment(model))["memory_bytes"]
    assert sizes["cost_model_memory_bytes"] == cost
    assert sizes["payload_bytes"] == cost + sizes["padding_bytes"]
    packed = len(result.program.quantized_names(stored=True))
    assert 0 <= sizes["padding_bytes"] < packed  # under a byte per tensor
    if bits == 8:
        assert sizes["padding_bytes"] == 0
    # The file is the payload plus the overhead the manifest lists.
    overhead = sizes["overhead_bytes"]
    assert (tmp_path / "model.safetensors").stat().st_size == sizes["payload_bytes"] + overhead[
        "total"
    ] + overhead["header_and_description"]
    weights = [p for p in manifest["points"] if p["kind"] == "weight"]
    assert all(p["stored_bytes"] == (p["params"] * p["bits"] + 7) // 8 for p in weights)
    assert {p["name"] for p in manifest["points"]} == set(model.workload().names)
