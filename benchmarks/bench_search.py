"""Overhead of the search loop per evaluation, for every registered algorithm.

The evaluator is closed-form (``AnalyticEvaluator``: mean of 1/bits), so
what is timed is the search's own work per evaluation: the algorithm's ask
and tell, deduplication, the cost model and the cheap constraints, repairs of
infeasible proposals, the evaluation log (written, flushed and fsynced in the
background) and periodic proposer checkpoints. Setting: MOHAQ's 16-point SRU
workload on MOHAQ's Bit Fusion table, objectives error and speedup, a memory
bound at the median memory of uniformly drawn assignments (about half the
space infeasible), budget 1000, three seeds per algorithm.

Per evaluation, overhead = the time between two consecutive logged
evaluations minus the evaluator's own time; the medians over all
evaluations of all seeds are reported, with means and p90.

Run: python benchmarks/bench_search.py  (writes benchmarks/results/search.json and search.md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mohaq.hardware import load_platform
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.search import AnalyticEvaluator, SearchCallback, SearchSettings, run_search
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers import available_algorithms

RESULTS = Path(__file__).resolve().parent / "results"


class Stopwatch(SearchCallback):
    """Per-evaluation loop overhead: wall time between records minus evaluator time."""

    def __init__(self) -> None:
        self.last = 0.0
        self.started = 0.0
        self.overheads: list[float] = []

    def on_search_start(self, info) -> None:
        self.last = self.started = time.perf_counter()

    def on_evaluation(self, record, progress) -> None:
        now = time.perf_counter()
        self.overheads.append(max(0.0, now - self.last - record.seconds))
        self.last = now


def median_memory_mb(workload, cost_model, draws: int = 2000) -> tuple[float, float]:
    """The median memory of uniform draws over 2/4/8/16 bits, and the fraction
    of draws above it once rounded (the infeasible share)."""
    problem = SearchProblem(
        workload=workload, cost_model=cost_model, objectives=["error", "speedup"]
    )
    rng = np.random.default_rng(0)
    memories = []
    for _ in range(draws):
        genes = tuple(int(g) for g in rng.integers(4, size=problem.space.num_genes))
        memories.append(problem.metrics(genes)["memory_mb"])
    bound = round(float(np.median(memories)), 3)
    return bound, float(np.mean(np.asarray(memories) > bound))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--algorithms", default="", help="comma-separated registered names (default: all)"
    )
    parser.add_argument(
        "--out", default="search", help="results file stem under benchmarks/results"
    )
    args = parser.parse_args()
    wanted = [name for name in args.algorithms.split(",") if name]

    workload, cost_model = mohaq_sru_workload(), load_platform("bitfusion-mohaq")
    bound, infeasible = median_memory_mb(workload, cost_model)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in available_algorithms():
            if wanted and entry.name not in wanted:
                continue
            for seed in range(args.seeds):
                settings = SearchSettings(
                    platform="bitfusion-mohaq",
                    objectives=["error", "speedup"],
                    constraints={"max_memory_mb": bound},
                    budget=args.budget,
                    algorithm=entry.name,
                    seed=seed,
                    run_dir=str(Path(tmp) / f"{entry.name}-{seed}"),
                    rescore_test=False,
                )
                stopwatch = Stopwatch()
                start = time.perf_counter()
                result = run_search(
                    settings,
                    workload=workload,
                    evaluator=AnalyticEvaluator(),
                    callbacks=[stopwatch],
                )
                seconds = time.perf_counter() - start
                overheads_ms = [1000 * x for x in stopwatch.overheads]
                runs.setdefault(entry.name, []).append(
                    {
                        "seed": seed,
                        "options": settings.algorithm_options.to_dict(),
                        "evaluations": len(result.records),
                        "seconds_total": round(seconds, 3),
                        "setup_seconds": round(stopwatch.started - start, 3),
                        "median_ms": round(statistics.median(overheads_ms), 3),
                        "mean_ms": round(statistics.fmean(overheads_ms), 3),
                        "p90_ms": round(float(np.percentile(overheads_ms, 90)), 3),
                        "front_size": len(result.front),
                        "hypervolume": round(result.hypervolume, 4),
                        "stopped_early": result.stopped_early,
                    }
                )
                print(entry.name, seed, runs[entry.name][-1])
    summary = {}
    for name, rows in runs.items():
        summary[name] = {
            "median_ms_per_evaluation": statistics.median(r["median_ms"] for r in rows),
            "mean_ms_per_evaluation": round(statistics.fmean(r["mean_ms"] for r in rows), 3),
            "p90_ms_per_evaluation": statistics.median(r["p90_ms"] for r in rows),
            "median_hypervolume": statistics.median(r["hypervolume"] for r in rows),
        }
    out = {
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        "budget": args.budget,
        "seeds": args.seeds,
        "memory_bound_mb": bound,
        "infeasible_share_of_uniform_draws": round(infeasible, 3),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "summary": summary,
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Search loop overhead per evaluation",
        "",
        f"`python benchmarks/bench_search.py{' --algorithms ' + args.algorithms if wanted else ''}"
        f"{'' if args.out == 'search' else ' --out ' + args.out}` — budget {args.budget}, {args.seeds} seeds per "
        f"algorithm, MOHAQ SRU workload on bitfusion-mohaq, memory <= {bound} MB "
        f"({100 * infeasible:.0f}% of uniform draws infeasible), closed-form evaluator; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| algorithm | median ms/eval | mean ms/eval | p90 ms/eval | median hypervolume |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['median_ms_per_evaluation']:.2f} | {row['mean_ms_per_evaluation']:.2f} "
            f"| {row['p90_ms_per_evaluation']:.2f} | {row['median_hypervolume']:.4g} |"
        )
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
