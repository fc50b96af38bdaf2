"""Cost of one search evaluation (post-training quantization + PER on the optimization
set) against one float forward pass over the same optimization set.

Usage (after `mohaq fit -c lightning_configs/quickstart.yaml`):

    python benchmarks/bench_ptq_evaluation.py --checkpoint runs/quickstart/checkpoints/best.ckpt

Writes benchmarks/results/ptq_evaluation.json: medians of several runs, the ratio
(evaluation / float forward) measured in the same run, and candidates per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from mohaq.checkpoints import load_model_weights
from mohaq.datamodules.timit import TIMITDataModule
from mohaq.quant.assignment import BitAssignment
from mohaq.search.evaluators import PTQEvaluator
from mohaq.system import AcousticSystem


def _median_seconds(function, repeats: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--utterances", type=int, default=48, help="optimization-set size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/ptq_evaluation.json")
    args = parser.parse_args()

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    system = AcousticSystem(**hparams)
    load_model_weights(system, args.checkpoint)
    data = TIMITDataModule(optimization_set_utterances=args.utterances)

    start = time.perf_counter()
    evaluator = PTQEvaluator(system, data, batch_size=args.batch_size, device="cpu")
    setup_seconds = time.perf_counter() - start
    batches = evaluator._split_batches("optimization")

    @torch.no_grad()
    def float_forward() -> None:
        system.apply_bit_assignment(BitAssignment())
        for features, _, lengths in batches:
            system(features, lengths)

    names = system.workload().names
    rng = random.Random(0)
    candidates = [
        BitAssignment({name: rng.choice((2, 4, 8, 16)) for name in names})
        for _ in range(args.candidates)
    ]
    float_forward()  # warm-up (TorchScript profiling runs)
    float_median, float_times = _median_seconds(float_forward, args.repeats)
    first_times, repeat_times = [], []
    for assignment in candidates:
        t0 = time.perf_counter()
        evaluator.evaluate(assignment)
        first_times.append(time.perf_counter() - t0)
    for assignment in candidates[: args.repeats]:
        t0 = time.perf_counter()
        evaluator.evaluate(assignment)
        repeat_times.append(time.perf_counter() - t0)
    evaluation_median = statistics.median(first_times)
    result = {
        "what": "PTQ evaluation per candidate vs one float forward over the optimization set",
        "checkpoint": args.checkpoint,
        "model": {k: hparams[k] for k in ("cell", "hidden_size", "num_layers", "projection_size")},
        "optimization_utterances": evaluator.num_utterances,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
        "evaluator_setup_seconds (calibration)": round(setup_seconds, 3),
        "float_forward_seconds_median": round(float_median, 4),
        "evaluation_seconds_median (new candidate)": round(evaluation_median, 4),
        "evaluation_seconds_median (weights cached)": round(statistics.median(repeat_times), 4),
        "ratio_evaluation_over_float_forward": round(evaluation_median / float_median, 3),
        "candidates_per_second": round(1.0 / evaluation_median, 3),
        "raw": {"float": float_times, "evaluations": first_times, "repeats": repeat_times},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
