"""Speed of the quantizable recurrent layers against torch.nn.LSTM/GRU and the `sru` package.

Measures the median wall time of a forward pass (eval mode, no grad) and of a
forward + backward pass (train mode, dropout 0) of a 2-layer bidirectional
network at equal hidden size per direction, on the CPU (or CUDA with
``--device cuda``), for each intra-op thread count of ``--threads``:

- ``mohaq_sru``: :class:`mohaq.models.sru.SRULayer` x 2, float: one product
  per layer (oneDNN with the weight packed once in inference) and the
  compiled CPU recurrence kernel;
- ``mohaq_sru_mkl``: the same with the products through ``F.linear`` (MKL),
  to compare the GEMM paths;
- ``mohaq_sru_script``: the same with the TorchScript recurrence, the path
  other devices take;
- ``sru_pkg``: the `sru` package's ``SRU`` (rescale on, highway bias -1);
- ``torch_lstm``, ``torch_gru``: torch.nn.LSTM / torch.nn.GRU;
- ``mohaq_{gru,lstm}_layer``: our layers with per-layer points, float (the
  states are not quantized, so the cell runs in torch's fused kernel);
- ``mohaq_{gru,lstm}_layer_q16``: per-layer points, calibrated, every point
  and the fixed-precision states at 16 bits (a PTQ candidate; QAT when
  training): the scripted per-step loop;
- ``mohaq_{gru,lstm}_op_q8``: per-operator points, calibrated, every point
  at 8 bits (the fixed extras at 16): the scripted loop with every operator
  quantized.

Implementations are timed round-robin, one call each per round, so a load
change on the machine hits them alike; every ratio is taken within one run.
The 1-minute load average is recorded before and after each shape. The SRU
recurrence is also timed alone (forward + backward): compiled kernel,
TorchScript loop and a per-step autograd loop.

Targets (issue 18): mohaq_sru / torch_lstm <= 0.5; per-layer GRU/LSTM <= 1.5
of torch's; per-operator <= 2.5.

Run: python benchmarks/bench_recurrence.py  (writes benchmarks/results/
recurrence.json and recurrence.md; both shapes at 1 and 2 threads take about
15 minutes on 2 quiet cores). The `sru` package (``pip install sru``, the
``bench`` extra) is imported here only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from mohaq.models.gru import GRULayer
from mohaq.models.lstm import LSTMLayer
from mohaq.models.sru import SRULayer
from mohaq.models.sru_recurrence import sru_layer_recurrence
from mohaq.quant.apply import apply_bit_assignment
from mohaq.quant.assignment import BitAssignment
from mohaq.quant.calibration import observing

RESULTS = Path(__file__).resolve().parent / "results"
# (numerator, denominator, target): the speed targets.
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("mohaq_sru", "torch_lstm", 0.5),
    ("mohaq_gru_layer", "torch_gru", 1.5),
    ("mohaq_lstm_layer", "torch_lstm", 1.5),
    ("mohaq_gru_layer_q16", "torch_gru", 1.5),
    ("mohaq_lstm_layer_q16", "torch_lstm", 1.5),
    ("mohaq_gru_op_q8", "torch_gru", 2.5),
    ("mohaq_lstm_op_q8", "torch_lstm", 2.5),
)


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    layers: int = 2
    repeats: int = 5


CONFIGS = (
    Config("paper", batch=8, steps=300, input_size=256, hidden_size=550, repeats=5),
    Config("small", batch=8, steps=100, input_size=64, hidden_size=128, repeats=9),
)


class Stack(nn.Module):
    """Our layers stacked; batch-first ``(B, T, F)`` with lengths."""

    def __init__(self, make: Callable[[int, str], nn.Module], config: Config) -> None:
        super().__init__()
        sizes = [config.input_size] + [2 * config.hidden_size] * (config.layers - 1)
        self.layers = nn.ModuleList(make(size, f"l{i}") for i, size in enumerate(sizes))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, lengths)
        return x


def _quantize(stack: Stack, bits: int, config: Config, device: torch.device) -> Stack:
    """Calibrates on one utterance, then puts every point at ``bits`` (fixed extras 16)."""
    with observing(stack), torch.no_grad():
        utterance = torch.randn(1, config.steps, config.input_size, device=device)
        stack(utterance, torch.tensor([config.steps]))
    names = [q.name for layer in stack.layers for q in layer.quant_points()]
    apply_bit_assignment(stack, BitAssignment(dict.fromkeys(names, bits)), fixed_bits=16)
    return stack


def build(
    config: Config, device: torch.device
) -> tuple[dict[str, Callable[[Tensor, Tensor], Tensor]], list[nn.Module]]:
    """Name -> a function of batch-first features and lengths; and every module (for train/eval)."""
    hidden, layers = config.hidden_size, config.layers

    def stack(make: Callable[[int, str], nn.Module]) -> Stack:
        return Stack(make, config).to(device)

    sru_mkl = stack(lambda n, name: SRULayer(n, hidden, layer=name))
    for layer in sru_mkl.layers:
        layer.product.enabled = False
    ours: dict[str, nn.Module] = {
        "mohaq_sru": stack(lambda n, name: SRULayer(n, hidden, layer=name)),
        "mohaq_sru_mkl": sru_mkl,
        "mohaq_sru_script": stack(lambda n, name: SRULayer(n, hidden, layer=name, kernel="script")),
    }
    for cell, cls in (("gru", GRULayer), ("lstm", LSTMLayer)):
        ours[f"mohaq_{cell}_layer"] = stack(lambda n, name, cls=cls: cls(n, hidden, layer=name))
        ours[f"mohaq_{cell}_layer_q16"] = _quantize(
            stack(lambda n, name, cls=cls: cls(n, hidden, layer=name)), 16, config, device
        )
        ours[f"mohaq_{cell}_op_q8"] = _quantize(
            stack(lambda n, name, cls=cls: cls(n, hidden, layer=name, granularity="operator")),
            8, config, device,
        )  # fmt: skip
    runs: dict[str, Callable[[Tensor, Tensor], Tensor]] = dict(ours.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CUDA-kernel and grad-on-CPU warnings of `sru`
        import sru

        package = sru.SRU(
            config.input_size, hidden, num_layers=layers, bidirectional=True, rescale=True,
            highway_bias=-1.0, dropout=0.0,
        ).to(device)  # fmt: skip

    def run_package(x: Tensor, lengths: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return package(x.transpose(0, 1))[0]

    runs["sru_pkg"] = run_package
    modules: list[nn.Module] = [*ours.values(), package]
    for name, cls in (("torch_lstm", nn.LSTM), ("torch_gru", nn.GRU)):
        module = cls(config.input_size, hidden, num_layers=layers, bidirectional=True,
                     batch_first=True).to(device)  # fmt: skip
        runs[name] = lambda x, lengths, module=module: module(x)[0]
        modules.append(module)
    return runs, modules


def naive_recurrence(u: Tensor, highway: Tensor, v_f: Tensor, v_r: Tensor, b_f: Tensor,
                     b_r: Tensor) -> Tensor:  # fmt: skip
    """The SRU recurrence as a per-step autograd loop over ``(B, T, D, 3, H)``, one direction
    per slice (direction 1 over reversed time)."""
    outputs = []
    for d in range(u.shape[2]):
        order = range(u.shape[1]) if d == 0 else range(u.shape[1] - 1, -1, -1)
        c = u.new_zeros(u.shape[0], u.shape[-1])
        steps = {}
        for t in order:
            f = torch.sigmoid(u[:, t, d, 1] + v_f[d] * c + b_f[d])
            r = torch.sigmoid(u[:, t, d, 2] + v_r[d] * c + b_r[d])
            c = f * c + (1 - f) * u[:, t, d, 0]
            steps[t] = r * c + (1 - r) * highway[:, t, d]
        outputs.append(torch.stack([steps[t] for t in range(u.shape[1])], dim=1))
    return torch.stack(outputs, dim=2)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(
    runs: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> tuple[dict[str, float], dict[str, float]]:
    """Median and minimum seconds per run; two warm-ups each (TorchScript's profiling
    executor optimizes on the second call), then ``repeats`` rounds in turn."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    warmups = 2
    for round_index in range(repeats + warmups):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            if round_index >= warmups:
                samples[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in samples.items()}
    return median, {name: min(values) for name, values in samples.items()}


def _ratios(seconds: dict[str, float]) -> dict[str, float]:
    return {
        f"{mine}/{reference}": seconds[mine] / seconds[reference]
        for mine, reference, _ in TARGETS
        if mine in seconds and reference in seconds
    } | {
        f"mohaq_sru/{name}": seconds["mohaq_sru"] / value
        for name, value in seconds.items()
        if "mohaq_sru" in seconds and name.startswith(("mohaq_sru_", "sru_pkg", "torch_"))
    }


def bench_config(config: Config, device: torch.device, skip: set[str]) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    runs, modules = build(config, device)
    runs = {n: run for n, run in runs.items() if n not in skip}
    x = torch.randn(config.batch, config.steps, config.input_size, device=device)
    lengths = torch.full((config.batch,), config.steps, dtype=torch.long)

    def forward_only(run: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                run(x, lengths)

        return go

    def forward_backward(run: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], None]:
        def go() -> None:
            run(x, lengths).sum().backward()

        return go

    for module in modules:
        module.eval()
    forward, forward_min = time_round_robin(
        {n: forward_only(r) for n, r in runs.items()}, config.repeats, device
    )
    for module in modules:
        module.train()
    both, both_min = time_round_robin(
        {n: forward_backward(r) for n, r in runs.items()}, config.repeats, device
    )

    # The SRU recurrence alone (3 matrices, highway from the input), forward + backward.
    b, t, h = config.batch, config.steps, config.hidden_size
    u = torch.randn(b, t, 2, 3, h, device=device, requires_grad=True)
    highway = torch.randn(b, t, 2 * h, device=device, requires_grad=True)
    vectors = [torch.randn(2, h, device=device, requires_grad=True) for _ in range(4)]

    def recurrence(kernel: str) -> Callable[[], None]:
        return lambda: sru_layer_recurrence(
            u, highway, *vectors, lengths, alpha=1.0, kernel=kernel  # type: ignore[arg-type]
        )[0].sum().backward()  # fmt: skip

    alone = {"compiled": recurrence("auto"), "torchscript": recurrence("script")}
    alone["per_step_autograd"] = lambda: naive_recurrence(
        u, highway.view(b, t, 2, h), *vectors
    ).sum().backward()  # fmt: skip
    recurrence_s, _ = time_round_robin(alone, config.repeats, device)
    return {
        "config": asdict(config),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "forward_s": forward,
        "forward_backward_s": both,
        "forward_min_s": forward_min,
        "forward_backward_min_s": both_min,
        "recurrence_forward_backward_s": recurrence_s,
        "ratios": {
            "forward": _ratios(forward),
            "forward_backward": _ratios(both),
            "forward_of_minima": _ratios(forward_min),
            "forward_backward_of_minima": _ratios(both_min),
        },
    }


def _mark(value: float, target: float) -> str:
    return f"{value:.2f} {'ok' if value <= target else 'MISSED'}"


def markdown(results: dict[str, object]) -> str:
    lines = [
        "# Recurrent layer speed",
        "",
        f"Device: {results['device']}; torch {results['torch']}; {results['machine']}. "
        "Medians of the repeats, seconds per call, every implementation timed round-robin in "
        "the same run; ratios within a run. Generated by `benchmarks/bench_recurrence.py`.",
        "",
        "## Targets",
        "",
        "Ratios of medians; in brackets the ratio of the minima, less sensitive to other load.",
        "",
        "| threads | shape | ratio | target | forward | forward+backward |",
        "|---:|---|---|---:|---:|---:|",
    ]
    runs = results["runs"]  # type: ignore[index]
    for run in runs:  # type: ignore[union-attr]
        for entry in run["configs"]:
            ratios = entry["ratios"]
            for mine, reference, target in TARGETS:
                key = f"{mine}/{reference}"
                if key not in ratios["forward"]:
                    continue
                cells = [
                    f"{_mark(ratios[kind][key], target)} ({ratios[kind + '_of_minima'][key]:.2f})"
                    if key in ratios[kind]
                    else "-"
                    for kind in ("forward", "forward_backward")
                ]
                lines.append(
                    f"| {run['threads']} | {entry['config']['name']} | {key} | {target} "
                    f"| {cells[0]} | {cells[1]} |"
                )
    for run in runs:  # type: ignore[union-attr]
        for entry in run["configs"]:
            config, load = entry["config"], entry["load_average_1min"]
            lines += [
                "",
                f"## {run['threads']} thread(s), {config['name']}: batch {config['batch']}, "
                f"T {config['steps']}, input {config['input_size']}, hidden "
                f"{config['hidden_size']} x 2 directions, {config['layers']} layers, "
                f"{config['repeats']} repeats; load average {load['before']:.1f} -> "
                f"{load['after']:.1f}",
                "",
                "| implementation | forward (s) | forward+backward (s) |",
                "|---|---:|---:|",
            ]
            for name, seconds in entry["forward_s"].items():
                both = entry["forward_backward_s"].get(name)
                lines.append(
                    f"| {name} | {seconds:.4f} | {f'{both:.4f}' if both is not None else '-'} |"
                )
            lines += ["", "| ratio | forward | forward+backward |", "|---|---:|---:|"]
            for key, value in entry["ratios"]["forward"].items():
                both = entry["ratios"]["forward_backward"].get(key)
                lines.append(
                    f"| {key} | {value:.3f} | {f'{both:.3f}' if both is not None else '-'} |"
                )
            rec = entry["recurrence_forward_backward_s"]
            lines += [
                "",
                "SRU recurrence alone, forward+backward: "
                + ", ".join(f"{name} {seconds:.4f} s" for name, seconds in rec.items())
                + ".",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", nargs="*", default=[c.name for c in CONFIGS])
    parser.add_argument("--skip", nargs="*", default=[], help="implementations to leave out")
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2],
                        help="intra-op thread counts to run, one after the other")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if any(threads < 1 for threads in args.threads):
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    results: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "runs": [],
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        run: dict[str, object] = {"threads": threads, "configs": []}
        results["runs"].append(run)  # type: ignore[union-attr]
        for config in CONFIGS:
            if config.name in args.configs:
                print(f"{threads} thread(s), {config.name} ...", flush=True)
                entry = bench_config(config, device, set(args.skip))
                run["configs"].append(entry)  # type: ignore[union-attr]
                print(json.dumps(entry["ratios"]["forward"], indent=1), flush=True)
                print(json.dumps(entry["ratios"]["forward_backward"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"_{args.device}"
    (args.out / f"recurrence{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"recurrence{suffix}.md").write_text(markdown(results))
    print((args.out / f"recurrence{suffix}.md").read_text())


if __name__ == "__main__":
    main()
