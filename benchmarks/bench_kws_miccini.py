"""Miccini et al.'s experiment on the synthetic keyword-spotting task: per-operator GRU bit widths.

A plain ``nn.GRU`` keyword spotter (:mod:`mohaq.tasks.keyword_spotting`) is
trained in float on the synthetic corpus (:mod:`mohaq.datamodules.keywords`),
converted with ``make_quantizable(granularity="operator")``, and NSGA-II
searches the bits of every operand and result inside the cell (and the
classifier's weight and input) for error and model size, each candidate
applied by post-training quantization and scored by accuracy over all clips of
the optimization split (the validation speakers). Homogeneous 8, 6 and 4-bit
models are the baselines; the result is the size reduction of the mixed
front at the accuracy of homogeneous 8-bit (Miccini et al. report 25-55% on
their four tasks, with quantization-aware training).

Model size (the ``size`` cost model): weights at their bits, biases at 16
bits; activations and cell operators cost no storage, so their bits only move
the error.

Command::

    python benchmarks/bench_kws_miccini.py --corpus data/keywords --epochs 30 --budget 200
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from mohaq.callbacks.qat import QuantizationAwareTraining
from mohaq.convert import make_quantizable, model_workload
from mohaq.datamodules.keywords import KeywordDataModule
from mohaq.hardware import get_cost_model
from mohaq.quant import BitAssignment
from mohaq.search import NSGA2, MetricEvaluator, SearchSettings, run_search
from mohaq.search.run import default_callbacks
from mohaq.tasks.keyword_spotting import ACCURACY, KeywordSpotter

RESULTS = Path(__file__).resolve().parent / "results"
HOMOGENEOUS = (8, 6, 4)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _reduction(front: list[dict], eight: dict, key: str) -> tuple[dict | None, float | None]:
    """The smallest front point at most as wrong as uniform-8 by ``key``, and its
    size reduction over uniform-8."""
    matching = [f for f in front if f[key] is not None and f[key] <= eight[key]]
    if not matching:
        return None, None
    smallest = min(matching, key=lambda f: f["memory_bytes"])
    return smallest, 1 - smallest["memory_bytes"] / eight["memory_bytes"]


def train(args: argparse.Namespace, data: KeywordDataModule) -> tuple[KeywordSpotter, float]:
    pl.seed_everything(args.seed, workers=True)
    model = KeywordSpotter(data.num_features, data.num_classes, hidden_size=args.hidden,
                           num_layers=args.layers)  # fmt: skip
    trainer = pl.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")  # fmt: skip
    started = time.perf_counter()
    trainer.fit(model, data)
    return model.eval(), time.perf_counter() - started


def _error(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> float:
    with torch.no_grad():
        hits = [(model(x).argmax(1) == y).float() for x, y in loader]
    return 1.0 - float(torch.cat(hits).mean())


def qat_errors(
    args: argparse.Namespace,
    data: KeywordDataModule,
    float_state: dict[str, torch.Tensor],
    assignments: dict[str, BitAssignment],
) -> dict[str, dict[str, float]]:
    """Each assignment fine-tuned with QAT for ``args.qat_epochs`` from the float
    weights, then scored (quantized) on the optimization and test splits."""
    errors = {}
    for label, assignment in assignments.items():
        pl.seed_everything(args.seed, workers=True)
        model = KeywordSpotter(data.num_features, data.num_classes, hidden_size=args.hidden,
                               num_layers=args.layers, learning_rate=args.qat_lr)  # fmt: skip
        make_quantizable(model, granularity="operator")
        model.load_state_dict(float_state)
        callback = QuantizationAwareTraining(bits=assignment.to_dict(), calibration_utterances=16)
        trainer = pl.Trainer(max_epochs=args.qat_epochs, callbacks=[callback], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu",
                             num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
        started = time.perf_counter()
        trainer.fit(model, data)
        model.eval()
        errors[label] = {
            "error": _error(model, data.optimization_dataloader()),
            "test_error": _error(model, data.test_dataloader()),
            "seconds": time.perf_counter() - started,
        }
    return errors


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/keywords")
    parser.add_argument("--speakers", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--qat-epochs", type=int, default=0,
                        help="also fine-tune the baselines and the front with QAT")  # fmt: skip
    parser.add_argument("--qat-lr", type=float, default=1e-3)
    parser.add_argument("--run-dir", default="runs/kws_miccini")
    parser.add_argument("--out", default=str(RESULTS / "kws_miccini"))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = KeywordDataModule(args.corpus, speakers=args.speakers)
    data.prepare_data()
    data.setup("fit")
    model, train_seconds = train(args, data)
    make_quantizable(model, granularity="operator")
    float_state = copy.deepcopy(model.state_dict())
    workload = model_workload(model)
    evaluator = MetricEvaluator(model, data, metric=ACCURACY, device="cpu",
                                metric_args={"num_classes": data.num_classes, "average": "micro"})  # fmt: skip
    size = get_cost_model("size")

    def scored(assignment: BitAssignment) -> dict:
        return {
            "error": evaluator.evaluate(assignment).error,
            "test_error": evaluator.evaluate(assignment, "test").error,
            "memory_bytes": size.metrics(workload, assignment).totals["memory_bytes"],
        }

    baselines = {"float": scored(BitAssignment({}))}
    for bits in HOMOGENEOUS:
        baselines[f"uniform-{bits}"] = scored(BitAssignment.uniform(workload.names, bits))
    settings = SearchSettings(
        platform="size", objectives=["error", "memory_mb"], bit_choices=args.bits,
        budget=args.budget, algorithm=NSGA2(), seed=args.seed, run_dir=args.run_dir,
    )  # fmt: skip
    started = time.perf_counter()
    result = run_search(settings, workload=workload, evaluator=evaluator,
                        callbacks=default_callbacks(progress=False, tensorboard=False))  # fmt: skip
    search_seconds = time.perf_counter() - started
    front = [
        {"error": r.error, "test_error": result.test_errors.get(r.index),
         "memory_bytes": r.metrics["memory_bytes"], "bits": dict(r.bits), "label": r.label}
        for r in result.front
    ]  # fmt: skip
    qat = {}
    if args.qat_epochs > 0:
        assignments = {
            f"uniform-{b}": BitAssignment.uniform(workload.names, b) for b in HOMOGENEOUS
        }
        assignments.update({f"front-{i}": BitAssignment(f["bits"]) for i, f in enumerate(front)})
        qat = qat_errors(args, data, float_state, assignments)
    eight = baselines["uniform-8"]
    smallest, reduction = _reduction(front, eight, "error")
    smallest_test, reduction_test = _reduction(front, eight, "test_error")
    record = {
        "command": "python benchmarks/bench_kws_miccini.py " + " ".join(argv),
        "settings": vars(args),
        "points": len(workload.points),
        "weights": sum(p.params for p in workload.matmul_weights()),
        "train_seconds": train_seconds,
        "search_seconds": search_seconds,
        "evaluations": len(result.records),
        "baselines": baselines,
        "front": front,
        "clips": data.split_sizes(),
        "smallest_at_uniform8_accuracy": smallest,
        "size_reduction_at_uniform8_accuracy": reduction,
        "qat": qat,
        "smallest_at_uniform8_test_accuracy": smallest_test,
        "size_reduction_at_uniform8_test_accuracy": reduction_test,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(record))
    print(report(record))
    return record


def _qat_lines(record: dict) -> list[str]:
    """The QAT table and the size reduction at QAT uniform-8's accuracy."""
    qat, s = record["qat"], record["settings"]
    sizes = {
        f"uniform-{b}": record["baselines"][f"uniform-{b}"]["memory_bytes"] for b in HOMOGENEOUS
    }
    sizes.update({f"front-{i}": f["memory_bytes"] for i, f in enumerate(record["front"])})
    lines = [
        "",
        f"After {s['qat_epochs']} epochs of quantization-aware training from the float weights "
        f"(learning rate {s['qat_lr']}), each model scored quantized:",
        "",
        "| model | error after QAT | size (bytes) |",
        "|---|---|---|",
    ]
    for label, e in qat.items():
        lines.append(f"| {label} | {_percent(e['error'])} ({_percent(e['test_error'])}) | "
                     f"{sizes[label]:.0f} |")  # fmt: skip
    eight = qat["uniform-8"]
    for key, split in (("error", "optimization split"), ("test_error", "test speakers")):
        matching = [n for n in qat if n.startswith("front-") and qat[n][key] <= eight[key]]
        if matching:
            best = min(matching, key=lambda n: sizes[n])
            shown = f"{_percent(1 - sizes[best] / sizes['uniform-8'])} ({best})"
        else:
            shown = "none (no front point as accurate)"
        lines.append(f"\nSize reduction at QAT uniform-8's accuracy, {split}: {shown}.")
    return lines


def report(record: dict) -> str:
    s = record["settings"]
    lines = [
        "# Per-operator GRU mixed precision on keyword spotting (Miccini et al.'s experiment)",
        "",
        f"Command: `{record['command'].strip()}`",
        "",
        f"Task: the synthetic keyword corpus ({s['speakers']} espeak speakers, 12 labels), "
        f"a {s['layers']}-layer GRU of {s['hidden']} units + linear classifier trained "
        f"{s['epochs']} epochs in float ({record['train_seconds']:.0f} s). Post-training "
        f"quantization, {record['points']} points per operator; NSGA-II over bits "
        f"{s['bits']}, {record['evaluations']} evaluations ({record['search_seconds']:.0f} s). "
        "Error = 1 - accuracy on the optimization split (validation speakers), test "
        "speakers in brackets; size = weights at their bits + biases at 16 bits.",
        "",
        "| model | error | size (bytes) |",
        "|---|---|---|",
    ]
    for name, b in record["baselines"].items():
        lines.append(f"| {name} | {_percent(b['error'])} ({_percent(b['test_error'])}) | "
                     f"{b['memory_bytes']:.0f} |")  # fmt: skip
    lines += ["", "Mixed front:", "", "| error | size (bytes) | weight bits |", "|---|---|---|"]
    for f in record["front"]:
        weights = {k: v for k, v in f["bits"].items() if k.endswith(("w_ih", "w_hh", ".weight"))}
        test = _percent(f["test_error"]) if f["test_error"] is not None else "-"
        lines.append(f"| {_percent(f['error'])} ({test}) | {f['memory_bytes']:.0f} | {weights} |")
    if record["qat"]:
        lines += _qat_lines(record)
    clips = record["clips"]
    one_clip = 1 / clips["val"]

    def reduction(key: str) -> str:
        value = record[key]
        return _percent(value) if value is not None else "none (no front point as accurate)"

    lines += [
        "",
        "Size reduction at the accuracy of homogeneous 8-bit, on the optimization split (what "
        f"the search saw): {reduction('size_reduction_at_uniform8_accuracy')}; judged by the "
        f"test speakers' error instead: {reduction('size_reduction_at_uniform8_test_accuracy')}.",
        "",
        f"Clips: {clips['train']} train, {clips['val']} optimization (validation speakers; one "
        f"clip is {_percent(one_clip)} of error), {clips['test']} test. The search selects on "
        "the optimization split, so its front is optimistic there: the test column is the "
        "honest estimate.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
