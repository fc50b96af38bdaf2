"""Benchmark of the search controller with a closed-form evaluator.

Measures the controller's own overhead per evaluation (optimizer ask/tell,
cost model, cheap constraints, fsynced log, reports) and compares the
hypervolume reached at equal budget by the default DE, MOHAQ's NSGA-II and
random search, on MOHAQ's 16-point SRU workload with a Bitfusion-style
speedup (product of weight and activation bits) and an analytic error
(mean of 1/bits, so 8 bits everywhere costs 12.5%). It does not measure the
PTQ evaluator, whose cost is a forward pass over the optimization set.

Run: python benchmarks/bench_search.py  (writes benchmarks/results/search.json)
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

from mohaq.hardware import load_platform
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.search import AnalyticEvaluator, run_search
from mohaq.search.pareto import hypervolume


def main() -> None:
    # The paper's workload and MOHAQ's Bitfusion table, from the toolkit itself.
    workload, cost = mohaq_sru_workload(), load_platform("bitfusion-mohaq")
    budget = 100
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for optimizer in ("TwoPointsDE-LHS", "nsga2", "RandomSearch"):
            for seed in (0, 1):
                start = time.perf_counter()
                result = run_search(
                    workload=workload,
                    platform=cost,
                    evaluator=AnalyticEvaluator(),
                    constraints={"max_memory_mb": 2.0},
                    budget=budget,
                    optimizer=optimizer,
                    seed=seed,
                    run_dir=Path(tmp) / f"{optimizer}-{seed}",
                    progress=False,
                    logger=False,
                )
                seconds = time.perf_counter() - start
                runs.setdefault(optimizer, []).append(
                    {
                        "seed": seed,
                        "seconds": round(seconds, 3),
                        "ms_per_evaluation": round(1000 * seconds / len(result.records), 2),
                        "evaluations": len(result.records),
                        "front_size": len(result.front),
                        "hypervolume": hypervolume(
                            [r.losses for r in result.front], result.reference
                        ),
                        "reference": result.reference,
                    }
                )
    summary = {
        name: {
            "mean_hypervolume": sum(r["hypervolume"] for r in rows) / len(rows),
            "mean_ms_per_evaluation": sum(r["ms_per_evaluation"] for r in rows) / len(rows),
        }
        for name, rows in runs.items()
    }
    out = {
        "what": "search controller overhead and hypervolume at equal budget (analytic error, "
        "MOHAQ SRU workload, Bitfusion-like speedup, max_memory_mb=2)",
        "budget": budget,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "summary": summary,
        "runs": runs,
    }
    path = Path(__file__).resolve().parent / "results" / "search.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
