"""Where post-training quantization loses accuracy, and what each PTQ method wins back.

Usage (after `mohaq fit -c lightning_configs/quickstart.yaml`):

    python benchmarks/bench_ptq.py --config lightning_configs/quickstart.yaml \
        --checkpoint runs/quickstart/checkpoints/best.ckpt --out benchmarks/results/ptq

Sections (``--sections``, default all):

- ``baseline``: float and uniform rows (W8A8, W4A16, W4A8, W8A4, W4A4, W2A8) with
  MOHAQ's recipe, optimization set and test PER.
- ``sensitivity``: one point at 8/4/2 bits, every other point float: which
  points cost the error (weights and activations separately).
- ``distributions``: each activation point's values over the optimization set
  (sign balance, skew, tails) and its 4-bit thresholds per calibration statistic.
- ``clipping``: MMSE, min-max and percentile clipping per role.
- ``statistic``: per-utterance median of thresholds (MOHAQ) vs one pooled threshold.
- ``calibration_size``: 4 to all utterances of the optimization set.
- ``granularity``: per-tensor vs per-output-channel weight scales.
- ``grid``: signed symmetric vs asymmetric (zero point) activation grids.
- ``methods``: each method alone and combined, on W8A8, W4A8, W8A4, W4A4.
- ``front``: the precision search (error, Bit Fusion speedup, no memory limit)
  with MOHAQ's recipe and with the best method.

Writes ``<out>.json`` (every number, the machine and its load) and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from mohaq.checkpoints import load_model_weights
from mohaq.datamodules.timit import TIMITDataModule
from mohaq.quant.apply import quantizers
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.ptq import PTQConfig
from mohaq.search.evaluators import OPTIMIZATION, TEST, PTQEvaluator
from mohaq.system import AcousticSystem

SECTIONS = (
    "baseline",
    "sensitivity",
    "distributions",
    "clipping",
    "statistic",
    "calibration_size",
    "granularity",
    "grid",
    "methods",
    "front",
)
MOHAQ = PTQConfig()
UNIFORM_ROWS = ((8, 8), (4, None), (4, 8), (8, 4), (4, 4), (2, 8))
METHOD_ROWS = ((8, 8), (4, 8), (8, 4), (4, 4))


def _label(w_bits: int | None, a_bits: int | None) -> str:
    return f"W{w_bits or 'f'}A{a_bits or 'f'}"


class Bench:
    """Builds one PTQ evaluator per config on its own copy of the float model."""

    def __init__(self, system: AcousticSystem, datamodule: TIMITDataModule, batch_size: int):
        self.system, self.datamodule, self.batch_size = system, datamodule, batch_size
        self.workload = system.workload()
        self.weights = [p.name for p in self.workload.points if p.kind == "weight"]
        self.activations = [p.name for p in self.workload.points if p.kind != "weight"]
        self._evaluators: dict[PTQConfig, PTQEvaluator] = {}
        self.seconds: dict[str, float] = {}

    def evaluator(self, config: PTQConfig) -> PTQEvaluator:
        if config not in self._evaluators:
            start = time.perf_counter()
            self._evaluators[config] = PTQEvaluator(
                copy.deepcopy(self.system), self.datamodule, batch_size=self.batch_size,
                device="cpu", ptq=config,
            )  # fmt: skip
            self.seconds[f"setup {config}"] = time.perf_counter() - start
            if len(self._evaluators) > 6:  # keep memory bounded: drop the oldest
                self._evaluators.pop(next(iter(self._evaluators)))
        return self._evaluators[config]

    def assignment(self, w_bits: int | None, a_bits: int | None) -> BitAssignment:
        bits = {name: w_bits for name in self.weights if w_bits is not None}
        bits.update({name: a_bits for name in self.activations if a_bits is not None})
        return BitAssignment(bits)

    def per(self, config: PTQConfig, assignment: BitAssignment, split: str = OPTIMIZATION) -> float:
        return round(100 * self.evaluator(config).evaluate(assignment, split).error, 2)

    def row(self, config: PTQConfig, w_bits: int | None, a_bits: int | None, test: bool = True):
        assignment = self.assignment(w_bits, a_bits)
        row = {"bits": _label(w_bits, a_bits), "opt": self.per(config, assignment)}
        if test:
            row["test"] = self.per(config, assignment, TEST)
        return row


# -- sections ------------------------------------------------------------------------------
def baseline(bench: Bench) -> dict[str, Any]:
    rows = [bench.row(MOHAQ, None, None)]
    rows += [bench.row(MOHAQ, w, a) for w, a in UNIFORM_ROWS]
    return {"config": MOHAQ.describe(), "rows": rows}


def sensitivity(bench: Bench) -> dict[str, Any]:
    reference = bench.per(MOHAQ, BitAssignment())
    rows = []
    for point in bench.workload.points:
        row: dict[str, Any] = {"point": point.name, "kind": point.kind}
        for bits in (8, 4, 2):
            row[bits] = round(bench.per(MOHAQ, BitAssignment({point.name: bits})) - reference, 2)
        rows.append(row)
    return {"float_opt": reference, "delta_pp": rows}


def distributions(bench: Bench) -> dict[str, Any]:
    """Each activation point's float values over the optimization set, one utterance
    per forward (no padding), and its 4-bit thresholds per calibration statistic."""
    evaluator = bench.evaluator(MOHAQ)
    system = evaluator.system
    system.apply_bit_assignment(BitAssignment())
    named = quantizers(system)
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in bench.activations}
    handles = []
    for name in bench.activations:

        def keep(module: Any, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            samples[name].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())

        handles.append(named[name].register_forward_pre_hook(keep))
    try:
        with torch.no_grad():
            for batch in bench.datamodule.optimization_dataloader(batch_size=1):
                system(batch[0], batch[2])
    finally:
        for handle in handles:
            handle.remove()
    pooled = quantizers(bench.evaluator(PTQConfig(activation_statistic="pooled")).system)
    rows = []
    for name in bench.activations:
        x = torch.cat(samples[name])
        flat = x.reshape(-1)
        std = flat.std().item()
        channel_std = x.std(0)
        sample = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))]
        low, high = torch.quantile(sample[:200_000], torch.tensor([0.001, 0.999])).tolist()
        kurtosis = (((flat - flat.mean()) / flat.std()) ** 4).mean().item()
        rows.append(
            {
                "point": name,
                "min": round(flat.min().item(), 2),
                "max": round(flat.max().item(), 2),
                "mean": round(flat.mean().item(), 3),
                "std": round(std, 3),
                "negative_share": round((flat < 0).float().mean().item(), 3),
                "q0.1%": round(low, 2),
                "q99.9%": round(high, 2),
                "kurtosis": round(kurtosis, 1),
                "max_over_std": round(flat.abs().max().item() / max(std, 1e-12), 1),
                "channel_std_min/max": f"{channel_std.min():.2f}/{channel_std.max():.2f}",
                "threshold4_median": round(named[name].threshold_for(4).item(), 2),
                "threshold4_pooled": round(pooled[name].threshold_for(4).item(), 2),
            }
        )
    return {"rows": rows}


def _config_rows(
    bench: Bench, configs: Iterable[tuple[str, PTQConfig]], bit_rows: Iterable[tuple[Any, Any]],
    test: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    bit_rows = list(bit_rows)
    for name, config in configs:
        row: dict[str, Any] = {"method": name}
        for w, a in bit_rows:
            result = bench.row(config, w, a, test=test)
            row[_label(w, a)] = result["opt"] if not test else (result["opt"], result["test"])
        rows.append(row)
    return rows


def clipping(bench: Bench) -> dict[str, Any]:
    methods = ("mmse", "minmax", "percentile")
    weights = _config_rows(
        bench, [(m, PTQConfig(weight_clipping=m)) for m in methods], ((4, None), (2, None))
    )
    activations = _config_rows(
        bench,
        [(f"{m}, {s}", PTQConfig(activation_clipping=m, activation_statistic=s))
         for s in ("median", "pooled") for m in methods],
        ((None, 8), (None, 4)),
    )  # fmt: skip
    return {"weights": weights, "activations": activations}


def statistic(bench: Bench) -> dict[str, Any]:
    configs = [(s, PTQConfig(activation_statistic=s)) for s in ("median", "pooled")]
    return {"rows": _config_rows(bench, configs, ((None, 4), (None, 2), (4, 4)), test=False)}


def calibration_size(bench: Bench) -> dict[str, Any]:
    sizes = [n for n in (4, 8, 16, 32) if n < bench.evaluator(MOHAQ).num_utterances] + [None]
    configs = [
        (f"{n or 'all'}, {s}", PTQConfig(calibration_utterances=n, activation_statistic=s))
        for s in ("median", "pooled")
        for n in sizes
    ]
    return {"rows": _config_rows(bench, configs, ((None, 4), (4, 4)))}


def granularity(bench: Bench) -> dict[str, Any]:
    configs = [("per-tensor", MOHAQ), ("per-channel", PTQConfig(per_channel_weights=True))]
    return {"rows": _config_rows(bench, configs, ((4, None), (2, None), (4, 4)))}


def grid(bench: Bench) -> dict[str, Any]:
    configs = [
        (f"{g}, {s}", PTQConfig(activation_grid=g, activation_statistic=s))
        for s in ("median", "pooled")
        for g in ("symmetric", "asymmetric")
    ]
    return {"rows": _config_rows(bench, configs, ((None, 4), (None, 2), (4, 4)))}


def method_ladder() -> list[tuple[str, PTQConfig]]:
    """Each method alone on MOHAQ's recipe, then combined."""
    symmetric_best = PTQConfig(output_aware_activations=True, adaround=True)
    return [
        ("MOHAQ (median MMSE, symmetric, per-tensor, nearest)", MOHAQ),
        ("pooled activation MMSE", PTQConfig(activation_statistic="pooled")),
        ("output-aware activation thresholds", PTQConfig(output_aware_activations=True)),
        ("asymmetric activations", PTQConfig(activation_grid="asymmetric")),
        ("per-channel weights", PTQConfig(per_channel_weights=True)),
        ("bias correction", PTQConfig(bias_correction=True)),
        ("AdaRound", PTQConfig(adaround=True)),
        ("output-aware + AdaRound (symmetric, per-tensor)", symmetric_best),
        ("output-aware + AdaRound + asymmetric + per-channel",
         replace(symmetric_best, activation_grid="asymmetric", per_channel_weights=True)),
        ("all of the above + bias correction",
         replace(symmetric_best, activation_grid="asymmetric", per_channel_weights=True,
                 bias_correction=True)),
    ]  # fmt: skip


def methods(
    bench: Bench,
    done: dict[str, Any],
    save: Callable[[dict[str, Any]], None],
    only: Iterable[str] = (),
) -> dict[str, Any]:
    """The method ladder, one method at a time: rows already in ``done`` (a
    previous, interrupted run) are kept, and each new row is saved at once.
    ``only``: run just the methods whose names contain one of these strings."""
    only = tuple(only)
    kept = {row["method"]: row for row in done.get("rows", [])}
    result: dict[str, Any] = {"float": done.get("float") or bench.row(MOHAQ, None, None)}
    result["rows"] = []
    for name, config in method_ladder():
        if only and not any(part in name for part in only) and name not in kept:
            continue
        if name not in kept:
            start = time.perf_counter()
            kept[name] = _config_rows(bench, [(name, config)], METHOD_ROWS, test=True)[0]
            kept[name]["seconds"] = round(time.perf_counter() - start, 1)
        result["rows"].append(kept[name])
        save(result)
    return result


def front(bench: Bench, budget: int) -> dict[str, Any]:
    from mohaq.search.run import run_search
    from mohaq.search.settings import SearchSettings

    results = {}
    for name, config in (("mohaq", MOHAQ), ("best", PTQConfig.preset("best"))):
        evaluator = bench.evaluator(config)
        evaluator.ptq.precompute((2, 4, 8, 16))
        with tempfile.TemporaryDirectory() as run_dir:
            settings = SearchSettings(
                platform="bitfusion-mohaq", objectives=["error", "speedup"],
                constraints={"max_error": 0.6}, budget=budget, seed=0, run_dir=run_dir,
                rescore_test=True, batch_size=bench.batch_size,
            )  # fmt: skip
            result = run_search(
                settings, workload=bench.workload, evaluator=evaluator, callbacks=[]
            )
            results[name] = _front_summary(result)
    return results


def _front_summary(result: Any) -> dict[str, Any]:
    names = list(result.front[0].bits) if result.front else []

    def row(record: Any, label: str) -> dict[str, Any]:
        test = result.test_errors.get(record.index)
        return {
            "solution": label,
            "bits": " ".join(str(record.bits.get(n, 32)) for n in names),
            "speedup": round(record.objectives["speedup"], 3),
            "error_opt": round(100 * record.error, 2),
            "error_test": None if test is None else round(100 * test, 2),
        }

    rows = [row(r, r.label or "baseline") for r in result.baselines]
    rows += [row(r, f"front #{r.index}") for r in result.front]
    return {"points": names, "front": rows, "hypervolume": round(result.hypervolume, 4)}


# -- report ---------------------------------------------------------------------------------
def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(map(str, columns)) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            if isinstance(value, tuple | list) and len(value) == 2:
                value = f"{value[0]} / {value[1]}"
            cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Post-training quantization: diagnosis and methods",
        "",
        f"Checkpoint `{results['checkpoint']}`; {results['machine']}; PER in % "
        "(optimization set; `a / b` = optimization set / test set).",
        "",
    ]
    for section in SECTIONS:
        if section not in results:
            continue
        data = results[section]
        lines += [f"## {section}", ""]
        for key, value in data.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                lines += [f"{key}:", ""] + _table(value) + [""]
            elif isinstance(value, dict) and "front" in value:
                lines += [f"{key}:", ""] + _table(value["front"]) + [""]
            else:
                lines += [f"- {key}: {json.dumps(value)}", ""]
    return "\n".join(lines)


def _load(config_paths: list[str], checkpoint: str) -> tuple[AcousticSystem, TIMITDataModule]:
    data_args: dict[str, Any] = {}
    for path in config_paths:  # later files override earlier ones, as in LightningCLI
        data_args.update(yaml.safe_load(Path(path).read_text()).get("data") or {})
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    hparams = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
    system = AcousticSystem(**hparams)
    load_model_weights(system, checkpoint)
    return system.eval(), TIMITDataModule(**data_args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", required=True, nargs="+", help="the fit YAML files (their data sections)"
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--budget", type=int, default=100, help="search budget of 'front'")
    parser.add_argument("--out", default="benchmarks/results/ptq")
    parser.add_argument(
        "--methods", nargs="*", default=[],
        help="methods section: only the methods whose names contain one of these strings",
    )  # fmt: skip
    args = parser.parse_args(argv)

    system, datamodule = _load(args.config, args.checkpoint)
    bench = Bench(system, datamodule, args.batch_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    results.update(
        {
            "checkpoint": args.checkpoint,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        }
    )

    def save(section: str, partial: dict[str, Any]) -> None:
        results[section] = partial
        json_path.write_text(json.dumps(results, indent=1, default=str))
        out.with_suffix(".md").write_text(markdown(results))

    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "baseline": lambda: baseline(bench),
        "sensitivity": lambda: sensitivity(bench),
        "distributions": lambda: distributions(bench),
        "clipping": lambda: clipping(bench),
        "statistic": lambda: statistic(bench),
        "calibration_size": lambda: calibration_size(bench),
        "granularity": lambda: granularity(bench),
        "grid": lambda: grid(bench),
        "methods": lambda: methods(
            bench,
            dict(results.get("methods") or {}),
            lambda r: save("methods", r),
            args.methods,
        ),
        "front": lambda: front(bench, args.budget),
    }
    for section in args.sections:
        start = time.perf_counter()
        load = os.getloadavg()[0]
        results[section] = runners[section]()
        results[section]["seconds"] = round(time.perf_counter() - start, 1)
        results[section]["load_average_at_start"] = round(load, 1)
        json_path.write_text(json.dumps(results, indent=1, default=str))
        out.with_suffix(".md").write_text(markdown(results))
        print(f"{section}: {results[section]['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
