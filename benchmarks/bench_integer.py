"""Integer-only inference and the ONNX QDQ export against fake quantization on a trained model.

For each assignment (uniform 8 and 16 bits, W4A8: every weight at 4 bits and
every activation at 8, and a per-layer 4/8 mix; uniform 8 once more with
gemmlowp's double rounding instead of single rounding) the model is calibrated on
the optimization set (as the search does), exported to disk with `mohaq
export`'s code, read back, and scored on the test split three ways: the
fake-quantized model, the integer-only reference inference run from
model.safetensors, and onnxruntime on model.onnx. Reported: PER of each,
frame argmax agreement with the fake-quantized model, the largest score
difference, the exported payload against the cost models' memory, and
timings.

Usage (after `mohaq fit -c lightning_configs/quickstart.yaml`):

    python benchmarks/bench_integer.py --checkpoint runs/quickstart/checkpoints/best.ckpt

Writes benchmarks/results/integer_inference.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mohaq.checkpoints import load_model_weights
from mohaq.datamodules.timit import TIMITDataModule
from mohaq.export.exporter import export_model, prepare_model
from mohaq.export.files import read_program
from mohaq.export.runtime import IntegerAcousticModel
from mohaq.export.scoring import OnnxAcousticModel
from mohaq.phone_error import PhoneErrorRate
from mohaq.quant.assignment import BitAssignment
from mohaq.system import AcousticSystem

IGNORE_INDEX = -100


def _runs(system: AcousticSystem) -> dict[str, tuple[BitAssignment, str]]:
    """label -> (assignment, rounding of int32 requantization)."""
    points = system.workload().points
    names = [p.name for p in points]
    layers = list(dict.fromkeys(p.layer for p in points))
    # Layers alternate 4 and 8 bits (weights and inputs together), the output layer at 8.
    alternating = {
        p.name: 4 if layers.index(p.layer) % 2 == 0 and p.layer != "output" else 8 for p in points
    }
    uniform8 = BitAssignment.uniform(names, 8)
    return {
        "uniform-16": (BitAssignment.uniform(names, 16), "single"),
        "uniform-8": (uniform8, "single"),
        "w4a8": (BitAssignment({p.name: 4 if p.kind == "weight" else 8 for p in points}), "single"),
        "layers-4/8": (BitAssignment(alternating), "single"),
        "uniform-8, gemmlowp rounding": (uniform8, "gemmlowp"),
    }


def _score(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    scoring_map: torch.Tensor,
) -> tuple[float, list[torch.Tensor], float]:
    metric = PhoneErrorRate(scoring_map, IGNORE_INDEX)
    scores = []
    start = time.perf_counter()
    with torch.no_grad():
        for features, targets, lengths in batches:
            logits = forward(features, lengths)
            metric.update(logits, targets)
            scores.append(logits)
    return float(metric.compute()), scores, time.perf_counter() - start


def _agreement(
    reference: list[torch.Tensor], other: list[torch.Tensor], batches: list[Any]
) -> dict[str, float]:
    agree = total = 0
    largest = difference = 0.0
    for ref, out, (_, _, lengths) in zip(reference, other, batches, strict=True):
        valid = torch.arange(ref.shape[1])[None, :] < lengths[:, None]
        agree += int((ref.argmax(-1) == out.argmax(-1))[valid].sum())
        total += int(valid.sum())
        difference = max(difference, float((ref - out).abs()[valid].max()))
        largest = max(largest, float(ref.abs()[valid].max()))
    return {
        "argmax_agreement": agree / total,
        "max_abs_score_difference": difference,
        "max_abs_score": largest,
        "relative_difference": difference / largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", default="test", choices=("test", "dev"))
    parser.add_argument("--out", default="benchmarks/results/integer_inference.json")
    parser.add_argument("--only", nargs="*", help="assignment names to run (default: all)")
    args = parser.parse_args()

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    data_hparams = {
        k: v
        for k, v in (checkpoint.get("datamodule_hyper_parameters") or {}).items()
        if not k.startswith("_")
    }
    system = AcousticSystem(**hparams)
    load_model_weights(system, args.checkpoint)
    system.eval()
    data = TIMITDataModule(**data_hparams)
    data.prepare_data()
    data.setup("validate")
    data.setup("test")
    loader = data.test_dataloader() if args.split == "test" else data.val_dataloader()
    batches = [(b[0], b[1], b[2]) for b in loader]
    scoring_map = system.scoring_map.detach().cpu()

    start = time.perf_counter()
    calibration = prepare_model(
        system,
        BitAssignment.uniform(system.workload().names, 8),
        lambda: data.optimization_dataloader(batch_size=1),
    )
    calibration_seconds = time.perf_counter() - start
    float_per = None
    results: dict[str, Any] = {}
    for label, (assignment, rounding) in _runs(system).items():
        if args.only and label not in args.only:
            continue
        prepare_model(system, assignment, None)  # calibration kept; assignment applied
        fake_per, fake_scores, fake_seconds = _score(system, batches, scoring_map)
        with tempfile.TemporaryDirectory() as directory:
            start = time.perf_counter()
            exported = export_model(
                system, directory, onnx=True, source={"assignment": label}, rounding=rounding
            )
            export_seconds = time.perf_counter() - start
            integer = IntegerAcousticModel(read_program(Path(directory) / "model.safetensors"))
            integer_per, integer_scores, integer_seconds = _score(integer, batches, scoring_map)
            onnx = OnnxAcousticModel(Path(directory) / "model.onnx")
            onnx_per, onnx_scores, onnx_seconds = _score(onnx, batches, scoring_map)
            onnx_bytes = (Path(directory) / "model.onnx").stat().st_size
        sizes = exported.manifest["sizes"]
        results[label] = {
            "bits": assignment.to_dict(),
            "rounding": rounding,
            "per_fake_quant": fake_per,
            "per_integer": integer_per,
            "per_onnx": onnx_per,
            "per_integer_minus_fake_quant_pp": 100 * (integer_per - fake_per),
            "integer_vs_fake_quant": _agreement(fake_scores, integer_scores, batches),
            "onnx_vs_fake_quant": _agreement(fake_scores, onnx_scores, batches),
            "sizes": {**sizes, "onnx_file_bytes": onnx_bytes},
            "seconds": {
                "fake_quant": round(fake_seconds, 2),
                "integer": round(integer_seconds, 2),
                "onnx": round(onnx_seconds, 2),
                "export": round(export_seconds, 2),
            },
        }
        print(
            label,
            json.dumps(
                {k: v for k, v in results[label].items() if k not in ("bits", "sizes")}, indent=1
            ),
        )
    if float_per is None:
        system.apply_bit_assignment(BitAssignment())
        float_per = _score(system, batches, scoring_map)[0]
    report = {
        "what": "integer-only inference and ONNX QDQ vs fake quantization",
        "checkpoint": args.checkpoint,
        "split": args.split,
        "utterances": sum(int(b[2].numel()) for b in batches),
        "model": {
            k: hparams[k]
            for k in ("cell", "hidden_size", "num_layers", "projection_size", "granularity")
        },
        "calibration": calibration,
        "calibration_seconds": round(calibration_seconds, 2),
        "per_float": float_per,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Integer-only inference and ONNX QDQ vs fake quantization ({report['model']['cell']}, "
        f"{report['split']} split, {report['utterances']} utterances)",
        "",
        f"Checkpoint `{report['checkpoint']}`; {report['calibration']}; float PER "
        f"{100 * report['per_float']:.2f}%.",
        "Command: `python benchmarks/bench_integer.py --checkpoint runs/quickstart/checkpoints/best.ckpt`",
        "",
        "Integer and ONNX are run from the exported files. Agreement: frames whose argmax equals the "
        "fake-quantized model's; score difference: largest |difference| over frames and classes, "
        "relative to the largest |score|. Payload: packed weights plus 16-bit biases and recurrent "
        "vectors; cost-model bytes: `memory_bytes` of the cost models for the same assignment.",
        "",
        "| assignment | PER fake-quant | PER integer | PER ONNX | integer - FQ (pp) "
        "| agreement integer | agreement ONNX | score diff integer | score diff ONNX "
        "| payload bytes | cost-model bytes | padding | seconds FQ / integer / ONNX |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in report["results"].items():
        s, i, o, t = r["sizes"], r["integer_vs_fake_quant"], r["onnx_vs_fake_quant"], r["seconds"]
        lines.append(
            f"| {label} | {100 * r['per_fake_quant']:.2f}% | {100 * r['per_integer']:.2f}% "
            f"| {100 * r['per_onnx']:.2f}% | {r['per_integer_minus_fake_quant_pp']:+.2f} "
            f"| {100 * i['argmax_agreement']:.2f}% | {100 * o['argmax_agreement']:.2f}% "
            f"| {i['relative_difference']:.1e} | {o['relative_difference']:.1e} "
            f"| {s['payload_bytes']:,} | {s['cost_model_memory_bytes']:,.0f} | {s['padding_bytes']:g} "
            f"| {t['fake_quant']} / {t['integer']} / {t['onnx']} |"
        )
    first = next(iter(report["results"].values()))["sizes"]["overhead_bytes"]
    lines += [
        "",
        f"Overhead beyond the payload (every assignment): scales {first['scales']:,} B, "
        f"requantization constants {first['requantization']:,} B, lookup tables "
        f"{first['lookup_tables']:,} B, safetensors header and description "
        f"{first.get('header_and_description', 0):,} B.",
        "",
        f"Machine: {report['machine']}; torch {report['torch']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
