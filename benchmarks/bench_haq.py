"""HAQ under a latency budget against the best uniform precision and NSGA-II's front.

On the quickstart model's real PTQ evaluator and the analytic Bit Fusion
platform (batch 1), for budgets given as fractions of the uniform-8-bit
latency: HAQ's best error within the budget, the best uniform precision that
fits the same budget, and the best error within the budget on the front of a
multi-objective search (NSGA-II, MOHAQ's setting, objectives error and
latency), all at the same number of evaluations (uniform baselines included).
A budget no assignment can meet is recorded with HAQ's refusal, which names
the smallest achievable latency.

Usage (after `mohaq fit -c lightning_configs/quickstart.yaml`):

    python benchmarks/bench_haq.py --checkpoint runs/quickstart/checkpoints/best.ckpt

Writes benchmarks/results/haq.json and haq.md. Runs go to runs/bench_haq/ and
an interrupted benchmark resumes them when started again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from mohaq.checkpoints import load_model_weights
from mohaq.datamodules.timit import TIMITDataModule
from mohaq.quant.assignment import BitAssignment
from mohaq.search import HAQ, NSGA2, PTQEvaluator, SearchSettings, run_search
from mohaq.search.evaluators import TEST
from mohaq.search.proposers.haq_budget import BudgetError
from mohaq.search.records import EvaluationRecord
from mohaq.search.report import markdown_table
from mohaq.search.run import default_callbacks
from mohaq.system import AcousticSystem

METRIC = "latency_cycles"


def build_evaluator(checkpoint: str, utterances: int) -> tuple[AcousticSystem, PTQEvaluator]:
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    hparams = {k: v for k, v in stored["hyper_parameters"].items() if not k.startswith("_")}
    system = AcousticSystem(**hparams)
    load_model_weights(system, checkpoint)
    data = TIMITDataModule(optimization_set_utterances=utterances)
    return system, PTQEvaluator(system, data, batch_size=16, device="cpu")


def search(
    run_dir: Path, algorithm: Any, *, seed: int, evaluations: int, system: AcousticSystem,
    evaluator: PTQEvaluator, platform_name: str,
) -> tuple[list[EvaluationRecord], float]:  # fmt: skip
    """One search (resumed if its run directory exists); records and wall seconds."""
    settings = SearchSettings(
        platform=platform_name,
        objectives=["error", METRIC],
        budget=evaluations,
        algorithm=algorithm,
        seed=seed,
        run_dir=str(run_dir),
        rescore_test=False,
    )
    start = time.perf_counter()
    result = run_search(
        settings,
        workload=system.workload(),
        evaluator=evaluator,
        resume=(run_dir / "evaluations.jsonl").exists(),
        callbacks=default_callbacks(progress=False, tensorboard=False),
    )
    return result.records, time.perf_counter() - start


def best_within(records: list[EvaluationRecord], bound: float) -> EvaluationRecord | None:
    fitting = [r for r in records if r.feasible and r.metrics[METRIC] <= bound]
    return min(fitting, key=lambda r: (r.error, r.metrics[METRIC]), default=None)


def describe(
    record: EvaluationRecord | None, test_error: dict[str, float]
) -> dict[str, Any] | None:
    if record is None:
        return None
    key = json.dumps(record.bits, sort_keys=True)
    return {
        "index": record.index,
        "label": record.label,
        "error": record.error,
        "test_error": test_error.get(key),
        METRIC: record.metrics[METRIC],
        "bits": record.bits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--evaluations", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.4, 0.25])
    parser.add_argument("--platform", default="bitfusion")
    parser.add_argument("--utterances", type=int, default=48, help="optimization-set size")
    parser.add_argument("--run-root", default="runs/bench_haq")
    parser.add_argument("--out", default="benchmarks/results/haq")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (1: on a shared 2-core machine two threads made an evaluation 10x slower)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    system, evaluator = build_evaluator(args.checkpoint, args.utterances)
    root = Path(args.run_root)
    refused: dict[str, str] = {}
    runs: dict[str, dict[str, Any]] = {}
    for seed in args.seeds:
        records, seconds = search(
            root / f"seed{seed}" / "nsga2", NSGA2(), seed=seed, evaluations=args.evaluations,
            system=system, evaluator=evaluator, platform_name=args.platform,
        )  # fmt: skip
        runs[f"nsga2/seed{seed}"] = {"records": records, "seconds": seconds}
        for fraction in args.fractions:
            try:
                records, seconds = search(
                    root / f"seed{seed}" / f"haq-{fraction:g}",
                    HAQ(budget_metric=METRIC, budget_fraction=fraction), seed=seed,
                    evaluations=args.evaluations, system=system, evaluator=evaluator,
                    platform_name=args.platform,
                )  # fmt: skip
            except BudgetError as error:
                refused[f"{fraction:g}"] = str(error)
                continue
            runs[f"haq-{fraction:g}/seed{seed}"] = {"records": records, "seconds": seconds}

    any_run = next(iter(runs.values()))["records"]
    uniform = {r.label: r for r in any_run if r.origin == "baseline"}
    reference = uniform["uniform-8"].metrics[METRIC]
    test_error: dict[str, float] = {}

    def test(record: EvaluationRecord | None) -> None:
        if record is not None:
            key = json.dumps(record.bits, sort_keys=True)
            if key not in test_error:
                test_error[key] = evaluator.evaluate(BitAssignment(record.bits), TEST).error

    rows = []
    for fraction in args.fractions:
        if f"{fraction:g}" in refused:
            rows.append({"fraction": fraction, "refused": refused[f"{fraction:g}"]})
            continue
        bound = fraction * reference
        best_uniform = best_within(list(uniform.values()), bound)
        test(best_uniform)
        per_seed = []
        for seed in args.seeds:
            haq = runs[f"haq-{fraction:g}/seed{seed}"]
            nsga = runs[f"nsga2/seed{seed}"]
            haq_best, nsga_best = (
                best_within(haq["records"], bound),
                best_within(nsga["records"], bound),
            )
            test(haq_best)
            test(nsga_best)
            haq_proposals = [r for r in haq["records"] if r.origin == "optimizer"]
            evaluation_seconds = sum(r.seconds for r in haq["records"])
            per_seed.append(
                {
                    "seed": seed,
                    "haq": describe(haq_best, test_error),
                    "nsga2": describe(nsga_best, test_error),
                    "haq_evaluations": len(haq["records"]),
                    "nsga2_evaluations": len(nsga["records"]),
                    "haq_proposals_over_budget": sum(
                        r.metrics[METRIC] > bound for r in haq_proposals
                    ),
                    "nsga2_evaluations_within_budget": sum(
                        r.metrics[METRIC] <= bound for r in nsga["records"]
                    ),
                    "haq_seconds": haq["seconds"],
                    "haq_overhead_seconds_per_evaluation": (haq["seconds"] - evaluation_seconds)
                    / len(haq["records"]),
                    "nsga2_seconds": nsga["seconds"],
                }
            )
        rows.append(
            {
                "fraction": fraction,
                "bound": bound,
                "best_uniform": describe(best_uniform, test_error),
                "seeds": per_seed,
            }
        )
    float_record = uniform["uniform-16"]
    test(float_record)
    payload = {
        "platform": args.platform,
        "metric": METRIC,
        "uniform_8_latency_cycles": reference,
        "uniform": {
            label: {"error": r.error, METRIC: r.metrics[METRIC], "fraction_of_uniform_8": r.metrics[METRIC] / reference}
            for label, r in uniform.items()
        },
        "float_16_test_error": test_error[json.dumps(float_record.bits, sort_keys=True)],
        "evaluations_per_run": args.evaluations,
        "seeds": args.seeds,
        "checkpoint": args.checkpoint,
        "budgets": rows,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "command": "python benchmarks/bench_haq.py --checkpoint " + args.checkpoint
        + f" --evaluations {args.evaluations} --seeds {' '.join(map(str, args.seeds))}"
        + f" --fractions {' '.join(f'{f:g}' for f in args.fractions)} --threads {args.threads}",
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def markdown(payload: dict[str, Any]) -> str:
    reference = payload["uniform_8_latency_cycles"]
    lines = [
        f"# HAQ under a latency budget ({payload['platform']}, quickstart SRU, PTQ)",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Budget: {payload['metric']} at most a fraction of uniform-8's {reference:g} cycles per frame. "
        f"Every run: {payload['evaluations_per_run']} evaluations (the 4 uniform baselines included), "
        "errors are PER on the optimization set (test set in brackets). NSGA-II "
        "(population 40, 10 offspring) searches error and latency; its column is the best "
        "error among its evaluations within the budget, i.e. its front at that cost.",
        "",
        "Uniform precisions: "
        + "; ".join(
            f"{label} {_pct(u['error'])} at {100 * u['fraction_of_uniform_8']:.1f}%"
            for label, u in payload["uniform"].items()
        ),
        "",
    ]
    rows = [
        [
            "budget",
            "seed",
            "HAQ",
            "best uniform that fits",
            "NSGA-II front at that cost",
            "evaluations (HAQ / NSGA-II)",
            "HAQ proposals over budget",
            "NSGA-II evaluations within budget",
        ]
    ]
    for row in payload["budgets"]:
        if "refused" in row:
            rows.append(
                [
                    f"{100 * row['fraction']:g}%",
                    "",
                    "refused: " + row["refused"],
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        label = f"{100 * row['fraction']:g}% ({row['bound']:g} cycles)"
        uniform = row["best_uniform"]
        uniform_text = (
            "none"
            if uniform is None
            else f"{uniform['label']}: {_pct(uniform['error'])} ({_pct(uniform['test_error'])})"
        )
        for s in row["seeds"]:
            haq, nsga = s["haq"], s["nsga2"]
            rows.append(
                [
                    label,
                    str(s["seed"]),
                    "none"
                    if haq is None
                    else f"{_pct(haq['error'])} ({_pct(haq['test_error'])}) at {100 * haq[payload['metric']] / reference:.1f}%",
                    uniform_text,
                    "none"
                    if nsga is None
                    else f"{_pct(nsga['error'])} ({_pct(nsga['test_error'])}) at {100 * nsga[payload['metric']] / reference:.1f}%",
                    f"{s['haq_evaluations']} / {s['nsga2_evaluations']}",
                    str(s["haq_proposals_over_budget"]),
                    str(s["nsga2_evaluations_within_budget"]),
                ]
            )
        haq_errors = [s["haq"]["error"] for s in row["seeds"] if s["haq"]]
        nsga_errors = [s["nsga2"]["error"] for s in row["seeds"] if s["nsga2"]]
        if len(row["seeds"]) > 1:
            rows.append(
                [label, "mean", _pct(statistics.mean(haq_errors)) if haq_errors else "", uniform_text,
                 _pct(statistics.mean(nsga_errors)) if nsga_errors else "", "", "", ""]
            )  # fmt: skip
    lines += [markdown_table(rows), ""]
    overheads = [
        s["haq_overhead_seconds_per_evaluation"]
        for row in payload["budgets"]
        for s in row.get("seeds", [])
    ]
    if overheads:
        lines.append(
            f"HAQ's own time (agent, enforcement, loop) per evaluation: median {statistics.median(overheads):.3f} s "
            "(the run's wall time minus its evaluations' time, over the runs above)."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
