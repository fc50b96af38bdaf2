"""Mean cost of a search candidate relative to one float forward pass, in a
real search: the default algorithm (the surrogate) on the quickstart model's
PTQ evaluator, with every reuse on (weights quantized once per (point, bits),
packed weights kept, activations reused across candidates sharing the first
layers' bits) and with racing off and on.

The float pass is the model with every quantizer off, one forward over the
optimization set's batches under ``torch.inference_mode`` (median of 5),
timed in the same process just before each search. A candidate's cost is its
record's evaluation seconds (apply + forward + PER).

Run:
    python benchmarks/bench_search_candidate_cost.py --checkpoint /work/ckpt/quickstart_main.ckpt

Writes benchmarks/results/search_candidate_cost.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mohaq.checkpoints import load_model_weights
from mohaq.datamodules.timit import TIMITDataModule
from mohaq.quant.assignment import BitAssignment
from mohaq.search import SearchSettings, run_search
from mohaq.search.evaluators import OPTIMIZATION, PTQEvaluator, Racing
from mohaq.system import AcousticSystem

RESULTS = Path(__file__).resolve().parent / "results"


def float_pass_seconds(evaluator: PTQEvaluator, repeats: int = 5) -> float:
    evaluator.system.apply_bit_assignment(BitAssignment())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            for features, _, lengths in evaluator._split_batches(OPTIMIZATION):
                evaluator.system(features, lengths)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    system = AcousticSystem(
        **{k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    )
    load_model_weights(system, args.checkpoint)
    data = TIMITDataModule(
        **{
            k: v
            for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items()
            if not k.startswith("_")
        }
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for racing in (False, True):
            evaluator = PTQEvaluator(
                system, data, batch_size=16, racing=Racing((0.25, 0.5), 0.99) if racing else None
            )
            reference = float_pass_seconds(evaluator)
            settings = SearchSettings(
                platform="bitfusion", objectives=["error", "speedup"], racing=racing,
                budget=args.budget, seed=0, run_dir=str(Path(tmp) / f"racing-{racing}"),
                rescore_test=False,
            )  # fmt: skip
            result = run_search(settings, workload=system.workload(), evaluator=evaluator)
            seconds = [r.seconds for r in result.records]
            cache = evaluator.prefix_cache
            label = "racing" if racing else "full"
            rows[label] = {
                "float_pass_seconds": round(reference, 4),
                "mean_candidate_seconds": round(statistics.fmean(seconds), 4),
                "mean_candidate_cost_vs_float_pass": round(
                    statistics.fmean(seconds) / reference, 3
                ),
                "median_candidate_cost_vs_float_pass": round(
                    statistics.median(seconds) / reference, 3
                ),
                "mean_fidelity": round(statistics.fmean(r.fidelity for r in result.records), 4),
                "prefix_stages_reused": cache.hits if cache else 0,
                "prefix_stages_computed": cache.misses if cache else 0,
                "hypervolume": round(result.hypervolume, 4),
                "evaluations": len(result.records),
            }
            print(label, rows[label], flush=True)
    out = {
        "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "checkpoint": args.checkpoint,
        "algorithm": "surrogate (default options)",
        "budget": args.budget,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "runs": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search_candidate_cost.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Candidate cost in a real search",
        "",
        f"`python benchmarks/bench_search_candidate_cost.py --checkpoint {args.checkpoint} "
        f"--budget {args.budget} --threads {args.threads}`; surrogate, seed 0; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| racing | float pass s | mean candidate s | mean / float | median / float "
        "| mean fidelity | layer stages reused / computed | hypervolume |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        lines.append(
            f"| {label} | {row['float_pass_seconds']} | {row['mean_candidate_seconds']} "
            f"| {row['mean_candidate_cost_vs_float_pass']} "
            f"| {row['median_candidate_cost_vs_float_pass']} | {row['mean_fidelity']} "
            f"| {row['prefix_stages_reused']} / {row['prefix_stages_computed']} "
            f"| {row['hypervolume']} |"
        )
    (RESULTS / "search_candidate_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
