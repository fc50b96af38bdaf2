"""Search quality: hypervolume against evaluations and against seconds, per algorithm.

Algorithms: the surrogate (probes + Gaussian process + expected hypervolume
improvement), nevergrad's TwoPointsDE-LHS, NSGA-II with MOHAQ's setting
(population 40, 10 offspring) and random search; three seeds each; medians.

Problems:

* ``quickstart``: the quickstart model's real post-training-quantization
  evaluator (PER on the optimization set), Bit Fusion analytic platform,
  objectives error and speedup, no memory limit. Every distinct assignment is
  scored once on the whole set and per racing chunk, then shared by all runs:
  a run's seconds are its own loop time plus the measured seconds of the
  evaluations it asked for (times the share evaluated, with racing), so the
  comparison costs one evaluation per distinct assignment. The float pass
  (no quantization) is timed the same way: ``candidate cost`` is the mean
  evaluation time relative to it.
* ``closed-form``: MOHAQ's 16-point SRU workload on MOHAQ's Bit Fusion table;
  ``analytic`` error = mean(1/bits) (additive, equal weights) and
  ``compounding`` error = 0.2 + d + 1.5 d^2 with d a weighted sum of
  4^(1 - log2 bits) per point (unequal sensitivities, superadditive at low bits).

Run:
    python benchmarks/bench_search_quality.py --part closed-form
    python benchmarks/bench_search_quality.py --part quickstart \
        --checkpoint runs/quickstart/checkpoints/best.ckpt

Writes benchmarks/results/search_quality_<part>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mohaq.quant.assignment import BitAssignment
from mohaq.search import (
    NSGA2,
    AnalyticEvaluator,
    EvaluationResult,
    SearchCallback,
    SearchSettings,
    run_search,
)
from mohaq.search.evaluators import OPTIMIZATION, Racing
from mohaq.search.proposers.surrogate import Surrogate

RESULTS = Path(__file__).resolve().parent / "results"
ALGORITHMS = {
    "surrogate": lambda: Surrogate(),
    "nsga2": lambda: NSGA2(population=40, offspring=10),
    "TwoPointsDE-LHS": lambda: "TwoPointsDE-LHS",
    "random": lambda: "random",
}
CHECKPOINTS = (25, 50, 100, 150, 200, 300, 400)


class SharedScores:
    """Scores every distinct assignment once (whole set, per racing chunk) and
    replays it to every run, with its measured seconds."""

    name = "ptq"

    def __init__(self, evaluator: Any, racing: Racing | None) -> None:
        self.evaluator = evaluator
        self.racing = racing
        self.cache: dict[tuple, tuple[list[list[tuple[int, int]]], float]] = {}
        self.evaluated = 0

    def _measure(self, assignment: BitAssignment) -> tuple[list[list[tuple[int, int]]], float]:
        key = tuple(sorted(assignment.bits.items()))
        if key not in self.cache:
            import torch

            from mohaq.phone_error import utterance_errors

            evaluator = self.evaluator
            start = time.perf_counter()
            with torch.no_grad():
                evaluator.system.apply_bit_assignment(assignment, fixed_bits=evaluator.fixed_bits)
                evaluator.system.eval()
                chunks = []
                for chunk in evaluator._chunks:
                    counts: list[tuple[int, int]] = []
                    for features, targets, lengths in chunk:
                        logits = evaluator.system(features, lengths)
                        counts += utterance_errors(logits, targets, evaluator.scoring_map, -100)
                    chunks.append(counts)
            self.cache[key] = (chunks, time.perf_counter() - start)
            self.evaluated += 1
        return self.cache[key]

    def evaluate(self, assignment, split=OPTIMIZATION, *, stop_above=None) -> EvaluationResult:
        chunks, seconds = self._measure(assignment)
        counts: list[tuple[int, int]] = []
        total = sum(len(c) for c in chunks)
        for number, chunk in enumerate(chunks):
            counts += chunk
            estimate, lower = self.racing.lower_bound(counts, total) if self.racing else (None, 0)
            last = number == len(chunks) - 1
            if not last and stop_above is not None and self.racing and lower > stop_above:
                share = len(counts) / total
                return EvaluationResult(
                    estimate, fidelity=share, extras={"virtual_seconds": seconds * share}
                )
        errors = sum(e for e, _ in counts) / sum(n for _, n in counts)
        return EvaluationResult(errors, extras={"virtual_seconds": seconds})


class Compounding(AnalyticEvaluator):
    """0.2 + d + 1.5 d^2, d = sum of per-point weights x 4^(1 - log2 bits)."""

    name = "compounding"

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        self.weights = list(weights)

    def evaluate(self, assignment, split=OPTIMIZATION, *, stop_above=None) -> EvaluationResult:
        super().evaluate(assignment, split)
        d = sum(
            w * 4.0 ** (1 - math.log2(b))
            for w, b in zip(self.weights, assignment.bits.values(), strict=True)
        )
        return EvaluationResult(0.2 + d + 1.5 * d * d, evaluator=self.name)


class Timeline(SearchCallback):
    """(evaluations, hypervolume, seconds) after each evaluation; seconds = the
    loop's own time + each evaluation's (virtual, when shared) seconds."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float, float]] = []
        self.last = 0.0
        self.seconds = 0.0
        self.fidelities: list[float] = []

    def on_search_start(self, info: Any) -> None:
        self.last = time.perf_counter()

    def on_evaluation(self, record: Any, progress: Any) -> None:
        now = time.perf_counter()
        loop = max(0.0, now - self.last - record.seconds)
        self.seconds += loop + record.extras.get("virtual_seconds", record.seconds)
        self.last = now
        self.fidelities.append(record.fidelity)
        self.points.append((progress.evaluations, progress.hypervolume(), self.seconds))


def hv_at(points: list[tuple[int, float, float]], evaluations: int) -> float | None:
    eligible = [hv for n, hv, _ in points if n <= evaluations]
    return eligible[-1] if eligible and points[-1][0] >= evaluations else None


def run_algorithms(
    *,
    name: str,
    settings: dict[str, Any],
    workload: Any,
    evaluator: Any,
    budgets: dict[str, int],
    seeds: int,
    reference_seconds: float | None = None,
    algorithms: Sequence[str] = tuple(ALGORITHMS),
    progress: Any = None,
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm, make in ALGORITHMS.items():
            if algorithm not in algorithms:
                continue
            for seed in range(seeds):
                timeline = Timeline()
                search = SearchSettings(
                    **settings,
                    algorithm=make(),
                    seed=seed,
                    budget=budgets[algorithm],
                    run_dir=str(Path(tmp) / f"{name}-{algorithm}-{seed}"),
                    rescore_test=False,
                )
                start = time.perf_counter()
                result = run_search(
                    search, workload=workload, evaluator=evaluator, callbacks=[timeline]
                )
                row = {
                    "seed": seed,
                    "evaluations": len(result.records),
                    "wall_seconds": round(time.perf_counter() - start, 2),
                    "hypervolume_at": {
                        str(n): hv_at(timeline.points, n)
                        for n in CHECKPOINTS
                        if n <= budgets[algorithm]
                    },
                    "seconds_at": {
                        str(n): next((round(s, 2) for m, _, s in timeline.points if m == n), None)
                        for n in CHECKPOINTS
                        if n <= budgets[algorithm]
                    },
                    "mean_fidelity": round(statistics.fmean(timeline.fidelities), 4),
                    "final_hypervolume": result.hypervolume,
                    "front_size": len(result.front),
                }
                if reference_seconds:
                    evals = [r for r in result.records]
                    virtual = [r.extras.get("virtual_seconds", r.seconds) for r in evals]
                    row["candidate_cost_vs_float_pass"] = round(
                        statistics.fmean(virtual) / reference_seconds, 3
                    )
                runs.setdefault(algorithm, []).append(row)
                print(
                    name,
                    algorithm,
                    seed,
                    {k: row[k] for k in ("evaluations", "hypervolume_at", "mean_fidelity")},
                    flush=True,
                )
                if progress is not None:
                    progress(summarize(runs))
    return summarize(runs)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over seeds of the hypervolume and the seconds at each checkpoint."""
    summary = {}
    for algorithm, rows in runs.items():
        at = {}
        for n in CHECKPOINTS:
            values = [r["hypervolume_at"].get(str(n)) for r in rows]
            if values and all(v is not None for v in values):
                at[str(n)] = round(statistics.median(values), 4)
        seconds = {}
        for n in CHECKPOINTS:
            values = [r["seconds_at"].get(str(n)) for r in rows]
            if values and all(v is not None for v in values):
                seconds[str(n)] = round(statistics.median(values), 2)
        summary[algorithm] = {
            "seeds": len(rows),
            "median_hypervolume_at": at,
            "median_seconds_at": seconds,
            "median_mean_fidelity": statistics.median(r["mean_fidelity"] for r in rows),
        }
        costs = [
            r["candidate_cost_vs_float_pass"] for r in rows if "candidate_cost_vs_float_pass" in r
        ]
        if costs:
            summary[algorithm]["median_candidate_cost_vs_float_pass"] = statistics.median(costs)
    return {"summary": summary, "runs": runs}


def budgets_of(args: argparse.Namespace) -> dict[str, int]:
    """The surrogate's 100, ``--budget`` for the baselines, ``--budgets`` overrides."""
    budgets = {name: args.budget for name in ALGORITHMS} | {"surrogate": 100}
    for item in filter(None, args.budgets.split(",")):
        name, _, value = item.partition("=")
        if name not in ALGORITHMS:
            raise SystemExit(
                f"--budgets: unknown algorithm {name!r}; choose from {list(ALGORITHMS)}"
            )
        budgets[name] = int(value)
    return budgets


def closed_form(args: argparse.Namespace) -> dict[str, Any]:
    from mohaq.hardware.reference_workloads import mohaq_sru_workload

    workload = mohaq_sru_workload()
    settings = {"platform": "bitfusion-mohaq", "objectives": ["error", "speedup"]}
    rng = np.random.default_rng(0)
    weights = (rng.lognormal(0.0, 1.0, size=len(workload.points)) * 0.05).tolist()
    budgets = budgets_of(args)
    out = {}
    for name, evaluator in (
        ("analytic", AnalyticEvaluator()),
        ("compounding", Compounding(weights)),
    ):
        out[name] = run_algorithms(
            name=name, settings=settings, workload=workload, evaluator=evaluator,
            budgets=budgets, seeds=args.seeds,
        )  # fmt: skip
    return out


def quickstart(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from mohaq.checkpoints import load_model_weights
    from mohaq.datamodules.timit import TIMITDataModule
    from mohaq.search.evaluators import PTQEvaluator
    from mohaq.system import AcousticSystem

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
    racing = Racing(fractions=(0.25, 0.5), confidence=0.99)
    ptq = PTQEvaluator(system, data, batch_size=16, racing=racing)
    shared = SharedScores(ptq, racing)
    # The float pass, timed like a candidate (median of 5).
    float_seconds = []
    for _ in range(5):
        start = time.perf_counter()
        ptq.error(BitAssignment())
        float_seconds.append(time.perf_counter() - start)
    reference = statistics.median(float_seconds)
    budgets = budgets_of(args)
    out: dict[str, Any] = {
        "float_pass_seconds": reference,
        "threads": args.threads,
        "budgets": budgets,
        "quantization_points": len(system.workload().points),
    }
    racing_algorithms = [a for a in args.racing_algorithms.split(",") if a]
    selected = [a for a in args.algorithms.split(",") if a] or list(ALGORITHMS)
    path = RESULTS / f"search_quality_{args.part}.json"
    if args.merge and path.exists():
        # Rerun some algorithms; the others' runs are kept from the file.
        previous = json.loads(path.read_text())
        out["kept_from_previous_run"] = {
            "command": previous.get("command"),
            "algorithms": [a for a in ALGORITHMS if a not in selected],
        }
        for label in ("full", "racing"):
            kept = {
                a: rows
                for a, rows in previous.get(label, {}).get("runs", {}).items()
                if a not in selected
            }
            if kept:
                out[label] = summarize(kept)
    # Algorithm by algorithm (with and without racing), saved after every run:
    # a benchmark stopped early keeps what it measured.
    for algorithm in ALGORITHMS:
        if algorithm not in selected:
            continue
        for racing_on in (False, True):
            if racing_on and algorithm not in racing_algorithms:
                continue
            settings = {
                "platform": "bitfusion", "objectives": ["error", "speedup"], "racing": racing_on,
            }  # fmt: skip
            label = "racing" if racing_on else "full"
            done = out.get(label, {"summary": {}, "runs": {}})["runs"]

            def progress(partial: dict[str, Any], label: str = label, done: dict = done) -> None:
                out[label] = summarize(done | partial["runs"])
                out["distinct_assignments_scored"] = shared.evaluated
                write(args.part, out, args)

            run_algorithms(
                name=label, settings=settings, workload=system.workload(), evaluator=shared,
                budgets=budgets, seeds=args.seeds, reference_seconds=reference,
                algorithms=[algorithm], progress=progress,
            )  # fmt: skip
    out["distinct_assignments_scored"] = shared.evaluated
    return out


def write(part: str, results: dict[str, Any], args: argparse.Namespace) -> None:
    import sys

    RESULTS.mkdir(parents=True, exist_ok=True)
    results["load_average_at_end"] = os.getloadavg()
    results["cpus"] = os.cpu_count()
    results["command"] = "python " + " ".join(sys.argv)
    (RESULTS / f"search_quality_{part}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Search quality: {part}", "", f"`{results['command']}`; "
             f"{args.seeds} seeds, medians; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.", ""]  # fmt: skip
    if "budgets" in results:
        lines += [f"Budgets: {results['budgets']}.", ""]
    for problem, block in results.items():
        if not isinstance(block, dict) or "summary" not in block:
            continue
        lines += [f"## {problem}", "", "| algorithm | seeds | " + " | ".join(f"HV@{n}" for n in CHECKPOINTS) + " | mean fidelity | candidate cost vs float pass |",
                  "|---|---|" + "---|" * (len(CHECKPOINTS) + 2)]  # fmt: skip
        for algorithm, row in block["summary"].items():
            at = row["median_hypervolume_at"]
            cost = row.get("median_candidate_cost_vs_float_pass")
            lines.append(
                f"| {algorithm} | {row.get('seeds', '')} | "
                + " | ".join(str(at.get(str(n), "")) for n in CHECKPOINTS)
                + f" | {row.get('median_mean_fidelity', '')} | {'' if cost is None else cost} |"
            )
        lines += ["", "Seconds to reach N evaluations (loop time + each evaluation's measured seconds):", "",
                  "| algorithm | " + " | ".join(f"s@{n}" for n in CHECKPOINTS) + " |",
                  "|---|" + "---|" * len(CHECKPOINTS)]  # fmt: skip
        for algorithm, row in block["summary"].items():
            seconds = row.get("median_seconds_at", {})
            lines.append(
                f"| {algorithm} | "
                + " | ".join(str(seconds.get(str(n), "")) for n in CHECKPOINTS)
                + " |"
            )
        lines.append("")
    (RESULTS / f"search_quality_{part}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("closed-form", "quickstart"), required=True)
    parser.add_argument(
        "--budget", type=int, default=400, help="budget of the baselines (surrogate: 100)"
    )
    parser.add_argument(
        "--budgets", default="", help="per-algorithm budgets, e.g. random=200,nsga2=400"
    )
    parser.add_argument(
        "--racing-algorithms",
        default=",".join(ALGORITHMS),
        help="quickstart: the algorithms also run with racing on",
    )
    parser.add_argument(
        "--algorithms", default="", help="quickstart: run only these (default: all)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="quickstart: keep the other algorithms' runs from the results file",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--checkpoint", default="runs/quickstart/checkpoints/best.ckpt")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results = closed_form(args) if args.part == "closed-form" else quickstart(args)
    write(args.part, results, args)


if __name__ == "__main__":
    main()
