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
from dataclasses import dataclass, field
from pathlib import Path

from mohaq.quant.assignment import BitAssignment
from mohaq.quant.points import QuantPoint, Workload
from mohaq.search import AnalyticEvaluator, run_search
from mohaq.search.pareto import hypervolume

# MOHAQ.md: MACs per frame (= parameters) of the SRU layers, projections and output.
LAYERS = [
    ("sru0", 75_900),
    ("proj1", 281_600),
    ("sru1", 844_800),
    ("proj2", 281_600),
    ("sru2", 844_800),
    ("proj3", 281_600),
    ("sru3", 844_800),
    ("output", 2_094_400),
]
SPEEDUP_BY_PRODUCT = {256: 1, 128: 2, 64: 4, 32: 8, 16: 16, 8: 32}


def mohaq_workload() -> Workload:
    points = []
    for layer, macs in LAYERS:
        points.append(QuantPoint(f"{layer}.input", "activation", layer))
        points.append(
            QuantPoint(
                f"{layer}.weight",
                "weight",
                layer,
                params=macs,
                macs_per_frame=macs,
                input_point=f"{layer}.input",
            )
        )
    return Workload(tuple(points), fixed_params=8_800, fixed_bits=16)


@dataclass
class _Report:
    totals: dict[str, float]


@dataclass
class BitfusionLike:
    """MOHAQ's Bitfusion speedup table and memory formula (MOHAQ.md)."""

    name: str = "bitfusion-like"
    allowed_bits: tuple[int, ...] = (2, 4, 8, 16)
    shared_layer_precision: bool = False
    memory_capacity_bytes: int | None = None
    metric_names: tuple[str, ...] = ("speedup", "memory_mb")
    higher_is_better: dict[str, bool] = field(default_factory=lambda: {"speedup": True})

    def metrics(self, workload: Workload, assignment: BitAssignment) -> _Report:
        macs = speed = bits = 0.0
        for point in workload.matmul_weights():
            w, a = assignment.bits[point.name], assignment.bits[point.input_point]
            macs += point.macs_per_frame
            speed += point.macs_per_frame * SPEEDUP_BY_PRODUCT.get(w * a, 64)
            bits += w * point.params
        memory = (bits + workload.fixed_params * workload.fixed_bits) / 8 / 2**20
        return _Report({"speedup": speed / macs, "memory_mb": memory})

    def check(self, workload: Workload, assignment: BitAssignment) -> list[str]:
        return []


def main() -> None:
    workload, cost = mohaq_workload(), BitfusionLike()
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
