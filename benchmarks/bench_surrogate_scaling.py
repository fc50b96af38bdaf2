"""Controller time of the surrogate algorithm per proposal, with and without
its scaling measures, in one process so that both see the same machine load.

``unbounded`` is the surrogate as it was first merged: the Gaussian process
fitted on every measurement, its hyperparameters optimized at every fit
(``max_points`` unbounded, ``refit_growth=0``). ``scaled`` is the default:
at most ``max_points`` (300) measurements, hyperparameters optimized again
only after the data grew by 20%, refitted with the stored kernel in between.

Setting: MOHAQ's 16-point SRU workload on MOHAQ's Bit Fusion table, error and
speedup, closed-form error (mean of 1/bits). Both proposers are told the
same ``--warm`` measurements (the all-highest assignment, then uniform random
draws), then take turns: each asks one candidate (timed), and the same
measurement is told to both, ``--steps`` times.

Run: python benchmarks/bench_surrogate_scaling.py
(writes benchmarks/results/surrogate_scaling.json and .md)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from mohaq.hardware import load_platform
from mohaq.hardware.reference_workloads import mohaq_sru_workload
from mohaq.search.problem import SearchProblem
from mohaq.search.proposers import ProposerContext, build_proposer
from mohaq.search.proposers.surrogate import Surrogate

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=450, help="measurements told first")
    parser.add_argument("--steps", type=int, default=20, help="timed proposals each")
    args = parser.parse_args()
    problem = SearchProblem(
        workload=mohaq_sru_workload(),
        cost_model=load_platform("bitfusion-mohaq"),
        objectives=["error", "speedup"],
    )
    context = ProposerContext(problem=problem, budget=args.warm + args.steps, workers=1, seed=0)
    variants = {
        "unbounded": Surrogate(max_points=10**9, refit_growth=0.0),
        "scaled": Surrogate(),
    }
    proposers = {name: build_proposer(options, context) for name, options in variants.items()}
    top = context.num_choices - 1

    def outcome(genes: tuple[int, ...]):
        bits = list(problem.assignment(genes).bits.values())
        return problem.outcome(genes, float(np.mean([1.0 / b for b in bits])))

    rng = np.random.default_rng(0)
    told = [(top,) * context.num_genes]
    told += [p for p in proposers["scaled"].probes]
    while len(told) < args.warm:
        told.append(tuple(int(g) for g in rng.integers(top + 1, size=context.num_genes)))
    for proposer in proposers.values():
        proposer.probes = []  # the warm-up told them (and more)
        for genes in dict.fromkeys(told):
            proposer.tell(genes, outcome(genes))
    times: dict[str, list[float]] = {name: [] for name in proposers}
    for _ in range(args.steps):
        asked = {}
        for name, proposer in proposers.items():
            start = time.perf_counter()
            (asked[name],) = proposer.ask(1)
            times[name].append(1000 * (time.perf_counter() - start))
        for genes in asked.values():
            for proposer in proposers.values():
                proposer.tell(genes, outcome(genes))
    summary = {
        name: {
            "median_ms": round(statistics.median(values), 1),
            "mean_ms": round(statistics.fmean(values), 1),
            "max_ms": round(max(values), 1),
            "fitted_on": len(proposers[name]._training_set()),
        }
        for name, values in times.items()
    }
    result = {
        "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "warm": args.warm,
        "steps": args.steps,
        "measurements_at_end": len(proposers["scaled"].observed),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "summary": summary,
        "raw_ms": times,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "surrogate_scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Surrogate controller time per proposal",
        "",
        f"`python benchmarks/bench_surrogate_scaling.py --warm {args.warm} --steps {args.steps}`: "
        f"{result['measurements_at_end']} measurements at the end; both variants interleaved "
        f"in one process; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        "| variant | median ms/proposal | mean | max | fitted on |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {name} | {row['median_ms']} | {row['mean_ms']} | {row['max_ms']} "
            f"| {row['fitted_on']} |"
        )
    (RESULTS / "surrogate_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
