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
from mohaq.search import HAQ, NSGA2, Nevergrad, PTQEvaluator, SearchSettings, run_search
from mohaq.search.evaluators import TEST
from mohaq.search.proposers.haq_budget import BudgetError
from mohaq.search.records import EvaluationRecord
from mohaq.search.report import markdown_table
from mohaq.search.run import default_callbacks
from mohaq.system import AcousticSystem

METRIC = "latency_cycles"
#: The multi-objective searches HAQ is compared with: MOHAQ's NSGA-II and the default algorithm.
MULTI_OBJECTIVE: dict[str, Any] = {"nsga2": NSGA2(), "de": Nevergrad()}
#: HAQ, and an ablation: uniform random actions throughout (no learning), same enforcement.
HAQ_VARIANTS: dict[str, dict[str, Any]] = {"haq": {}, "haq_random": {"warmup_episodes": 10**6}}
NAMES = {
    "haq": "HAQ",
    "haq_random": "random actions + HAQ's enforcement",
    "nsga2": "NSGA-II",
    "de": "TwoPointsDE-LHS",
}
WALL_SECONDS = "bench_wall_seconds.txt"


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
) -> tuple[list[EvaluationRecord], float | None]:  # fmt: skip
    """One search (resumed if its run directory exists); its records and wall
    seconds (added up over the calls that ran it, kept in the run directory)."""
    settings = SearchSettings(
        platform=platform_name,
        objectives=["error", METRIC],
        budget=evaluations,
        algorithm=algorithm,
        seed=seed,
        run_dir=str(run_dir),
        rescore_test=False,
    )
    wall = run_dir / WALL_SECONDS
    log = run_dir / "evaluations.jsonl"
    # An interrupted call wrote evaluations but no wall time: the total is unknown.
    before: float | None = 0.0
    if wall.exists():
        before = None if wall.read_text().strip() == "unknown" else float(wall.read_text())
    elif log.exists():
        before = None
    start = time.perf_counter()
    result = run_search(
        settings,
        workload=system.workload(),
        evaluator=evaluator,
        resume=log.exists(),
        callbacks=default_callbacks(progress=False, tensorboard=False),
    )
    seconds = None if before is None else before + time.perf_counter() - start
    wall.write_text("unknown\n" if seconds is None else f"{seconds:.3f}\n")
    return result.records, seconds


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
        for name, options in MULTI_OBJECTIVE.items():
            records, seconds = search(
                root / f"seed{seed}" / name, options, seed=seed, evaluations=args.evaluations,
                system=system, evaluator=evaluator, platform_name=args.platform,
            )  # fmt: skip
            runs[f"{name}/seed{seed}"] = {"records": records, "seconds": seconds}
        for fraction in args.fractions:
            for variant, changes in HAQ_VARIANTS.items():
                try:
                    records, seconds = search(
                        root / f"seed{seed}" / f"{variant}-{fraction:g}",
                        HAQ(budget_metric=METRIC, budget_fraction=fraction, **changes), seed=seed,
                        evaluations=args.evaluations, system=system, evaluator=evaluator,
                        platform_name=args.platform,
                    )  # fmt: skip
                except BudgetError as error:
                    refused[f"{fraction:g}"] = str(error)
                    break
                runs[f"{variant}-{fraction:g}/seed{seed}"] = {
                    "records": records,
                    "seconds": seconds,
                }

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
            entry: dict[str, Any] = {"seed": seed}
            for name in (*HAQ_VARIANTS, *MULTI_OBJECTIVE):
                key = (
                    f"{name}-{fraction:g}/seed{seed}"
                    if name in HAQ_VARIANTS
                    else f"{name}/seed{seed}"
                )
                run = runs[key]
                best = best_within(run["records"], bound)
                test(best)
                entry[name] = describe(best, test_error)
                entry[f"{name}_evaluations"] = len(run["records"])
                entry[f"{name}_within_budget"] = sum(
                    r.metrics[METRIC] <= bound for r in run["records"]
                )
            haq = runs[f"haq-{fraction:g}/seed{seed}"]
            entry["haq_proposals_over_budget"] = sum(
                r.metrics[METRIC] > bound for r in haq["records"] if r.origin == "optimizer"
            )
            entry["haq_seconds"] = haq["seconds"]
            entry["haq_overhead_seconds_per_evaluation"] = (
                None
                if haq["seconds"] is None
                else (haq["seconds"] - sum(r.seconds for r in haq["records"])) / len(haq["records"])
            )
            per_seed.append(entry)
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
        "error among its evaluations within the budget, i.e. its front at that cost; the same "
        "for nevergrad's TwoPointsDE-LHS, the default algorithm. The ablation column runs HAQ "
        "with random actions throughout (warm-up never ends): the same budget enforcement "
        "and error model, no learning agent.",
        "",
        "Uniform precisions: "
        + "; ".join(
            f"{label} {_pct(u['error'])} at {100 * u['fraction_of_uniform_8']:.1f}%"
            for label, u in payload["uniform"].items()
        ),
        "",
    ]
    names = [*HAQ_VARIANTS, *MULTI_OBJECTIVE]
    rows = [
        [
            "budget",
            "seed",
            "HAQ",
            "best uniform that fits",
            NAMES["haq_random"],
            *[f"{NAMES[n]} front at that cost" for n in MULTI_OBJECTIVE],
            "evaluations (" + " / ".join(NAMES[n] for n in names) + ")",
            "evaluations within budget (" + " / ".join(NAMES[n] for n in names) + ")",
            "HAQ proposals over budget",
        ]
    ]
    blank = [""] * (len(rows[0]) - 3)

    def cell(best: dict[str, Any] | None) -> str:
        if best is None:
            return "none within budget"
        share = 100 * best[payload["metric"]] / reference
        return f"{_pct(best['error'])} ({_pct(best['test_error'])}) at {share:.1f}%"

    for row in payload["budgets"]:
        if "refused" in row:
            rows.append([f"{100 * row['fraction']:g}%", "", "refused: " + row["refused"], *blank])
            continue
        label = f"{100 * row['fraction']:g}% ({row['bound']:g} cycles)"
        uniform = row["best_uniform"]
        uniform_text = (
            "none"
            if uniform is None
            else f"{uniform['label']}: {_pct(uniform['error'])} ({_pct(uniform['test_error'])})"
        )
        for s in row["seeds"]:
            rows.append(
                [
                    label,
                    str(s["seed"]),
                    cell(s["haq"]),
                    uniform_text,
                    cell(s["haq_random"]),
                    *[cell(s[n]) for n in MULTI_OBJECTIVE],
                    " / ".join(str(s[f"{n}_evaluations"]) for n in names),
                    " / ".join(str(s[f"{n}_within_budget"]) for n in names),
                    str(s["haq_proposals_over_budget"]),
                ]
            )
        if len(row["seeds"]) > 1:
            means = []
            for n in names:
                errors = [s[n]["error"] for s in row["seeds"] if s[n]]
                found = f"{len(errors)} of {len(row['seeds'])} seeds"
                means.append(f"{_pct(statistics.mean(errors))} ({found})" if errors else found)
            rows.append([label, "mean", means[0], uniform_text, *means[1:], "", "", ""])
    lines += [markdown_table(rows), ""]
    overheads = [
        s["haq_overhead_seconds_per_evaluation"]
        for row in payload["budgets"]
        for s in row.get("seeds", [])
        if s["haq_overhead_seconds_per_evaluation"] is not None
    ]
    if overheads:
        lines.append(
            f"HAQ's own time (agent, enforcement, loop) per evaluation: median {statistics.median(overheads):.3f} s "
            f"over {len(overheads)} HAQ runs (the run's wall time minus its evaluations' time; runs "
            "interrupted and resumed have no complete wall time and are left out)."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
