"""Cost of one search candidate (post-training quantization of a float model, scored on
the optimization set) against one float forward pass over the same set.

Usage (after `mohaq fit -c lightning_configs/quickstart.yaml`):

    python benchmarks/bench_ptq_evaluation.py --checkpoint runs/quickstart/checkpoints/best.ckpt

The optimization set is loaded and padded into batches the way
:class:`mohaq.search.evaluator.PTQEvaluator` does it (which also calibrates
the activation quantizers). Then, round-robin over ``--repeats`` rounds so
that a load change on the machine hits every variant alike:

- ``float_no_grad`` / ``float_inference``: every quantizer off, one forward
  over all batches under ``torch.no_grad`` / ``torch.inference_mode``;
- ``candidate_no_grad`` / ``candidate_inference``: apply a new random
  assignment (2/4/8/16 bits per point, fixed extras at 16), then the forward
  over all batches, under either mode; the weights are quantized (and packed
  for oneDNN) on the first batch and reused by the others;
- ``candidate_again_inference``: the same assignment once more (nothing to
  quantize);
- ``evaluate``: ``PTQEvaluator.evaluate`` as the search calls it (no_grad,
  PER scoring included).

Writes benchmarks/results/ptq_evaluation.json (one entry per ``--label``,
so runs of several checkouts sit side by side) and ptq_evaluation.md:
medians, the ratios to the float forward measured in the same run,
candidates per second and the load average before and after. Only public
APIs are used, so the same script measures an older checkout for a
before/after comparison:

    PYTHONPATH=/path/to/old/checkout python benchmarks/bench_ptq_evaluation.py \
        --checkpoint ... --label "before (106583c)"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from mohaq.checkpoints import load_model_weights
from mohaq.datamodules.timit import TIMITDataModule
from mohaq.quant.assignment import BitAssignment
from mohaq.search.evaluators import PTQEvaluator, rebatch
from mohaq.system import AcousticSystem

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--utterances", type=int, default=48, help="optimization-set size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--label", default="after", help="this run's entry in the results")
    parser.add_argument("--out", type=Path, default=RESULTS / "ptq_evaluation.json")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    system = AcousticSystem(**hparams)
    load_model_weights(system, args.checkpoint)
    data = TIMITDataModule(optimization_set_utterances=args.utterances)
    start = time.perf_counter()
    evaluator = PTQEvaluator(system, data, batch_size=args.batch_size, device="cpu")
    setup_seconds = time.perf_counter() - start
    singles = list(data.optimization_dataloader(batch_size=1))
    batches = rebatch(singles, args.batch_size)

    names = system.workload().names
    rng = random.Random(0)

    def new_assignment() -> BitAssignment:
        return BitAssignment({name: rng.choice((2, 4, 8, 16)) for name in names})

    def forward_all(mode: Callable[[], AbstractContextManager[object]]) -> None:
        with mode():
            for features, _, lengths in batches:
                system(features, lengths)

    last: list[BitAssignment] = [new_assignment()]

    def float_forward(mode: Callable[[], AbstractContextManager[object]]) -> Callable[[], None]:
        def run() -> None:
            system.apply_bit_assignment(BitAssignment())
            forward_all(mode)

        return run

    def candidate(
        mode: Callable[[], AbstractContextManager[object]], *, again: bool = False
    ) -> Callable[[], None]:
        def run() -> None:
            if not again:
                last[0] = new_assignment()
            system.apply_bit_assignment(last[0], fixed_bits=16)
            forward_all(mode)

        return run

    def evaluate() -> None:
        evaluator.evaluate(new_assignment())

    system.eval()
    variants: dict[str, Callable[[], None]] = {
        "float_no_grad": float_forward(torch.no_grad),
        "float_inference": float_forward(torch.inference_mode),
        "candidate_no_grad": candidate(torch.no_grad),
        "candidate_inference": candidate(torch.inference_mode),
        "candidate_again_inference": candidate(torch.inference_mode, again=True),
        "evaluate": evaluate,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.repeats + 1):  # round 0 warms up (TorchScript, caches)
        for name, run in variants.items():
            t0 = time.perf_counter()
            run()
            if round_index > 0:
                samples[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(values) for name, values in samples.items()}
    reference = median["float_no_grad"]
    result = {
        "what": "one PTQ candidate (apply + forward over the optimization set) vs one float "
        "forward over the same set; medians of round-robin repeats",
        "checkpoint": args.checkpoint,
        "model": {k: hparams[k] for k in ("cell", "hidden_size", "num_layers", "projection_size")},
        "optimization_utterances": evaluator.num_utterances,
        "batches": len(batches),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "torch": torch.__version__,
        "evaluator_setup_seconds (calibration)": round(setup_seconds, 3),
        "seconds_median": {name: round(value, 4) for name, value in median.items()},
        "ratio_to_float_forward_no_grad": {
            name: round(value / reference, 3) for name, value in median.items()
        },
        "candidates_per_second (evaluate)": round(1.0 / median["evaluate"], 3),
        "raw": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()).get("runs", {}) if args.out.exists() else {}
    runs[args.label] = result
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(runs))
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))


def markdown(runs: dict[str, dict[str, object]]) -> str:
    """A table of every run: seconds and ratio to the float forward (no_grad)."""
    lines = [
        "# Cost of a PTQ search candidate",
        "",
        "One candidate = apply a new bit assignment, then a forward over the optimization set; "
        "ratio = seconds / float forward (no_grad) in the same run. Medians of round-robin "
        "repeats. Generated by `benchmarks/bench_ptq_evaluation.py`.",
        "",
    ]
    for label, run in runs.items():
        load = run["load_average_1min"]
        lines += [
            f"## {label}",
            "",
            f"{run['model']}, {run['optimization_utterances']} utterances in {run['batches']} "
            f"batches of up to {run['batch_size']}; {run['threads']} threads; torch "
            f"{run['torch']}; load average {load['before']:.1f} -> {load['after']:.1f}.",  # type: ignore[index]
            "",
            "| variant | seconds | ratio |",
            "|---|---:|---:|",
        ]
        ratios = run["ratio_to_float_forward_no_grad"]
        for name, seconds in run["seconds_median"].items():  # type: ignore[union-attr]
            lines.append(f"| {name} | {seconds:.4f} | {ratios[name]:.3f} |")  # type: ignore[index]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
