"""Speed of the quantizable SRU against the `sru` package, torch.nn.LSTM and torch.nn.GRU.

Measures, on the CPU (and on CUDA when ``--device cuda`` is given and
available), the median wall time of a forward pass (no grad, eval mode) and
of a forward + backward pass (train mode, dropout 0) of a 2-layer
bidirectional network at equal hidden size per direction:

- ``mohaq_sru``: :class:`mohaq.models.sru.SRULayer` x 2 (fused TorchScript
  recurrence, quantizers in float);
- ``sru_pkg``: the `sru` package's ``SRU`` (rescale on, highway bias -1; on
  the CPU it runs a compiled C++ recurrence without grad and a per-step
  Python loop under autograd when training);
- ``torch_lstm``, ``torch_gru``: torch.nn.LSTM / torch.nn.GRU (oneDNN/ATen);
- ``mohaq_gru``, ``mohaq_lstm``: this toolkit's quantizable GRU and LSTM
  layers (a per-step Python loop, so per-operator points are possible);
- ``recurrence_*``: the SRU recurrence alone, fused (``fused``) against a
  per-step autograd loop of the same equations (``naive``).

Implementations are timed round-robin, one run each per repeat, so a load
change on the machine hits them alike; ratios ``mohaq_sru / other`` are taken
from the same run. The `sru` package is imported here only.

Run: python benchmarks/bench_recurrence.py --threads 1  (writes
benchmarks/results/recurrence.json and recurrence.md; the recorded results
were taken so, on a shared 2-CPU machine, where 2-thread timings of the
torch RNNs varied by 10x between runs). It takes about 10 minutes.
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
from mohaq.models.sru_recurrence import sru_recurrence

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    layers: int = 2
    repeats: int = 5
    # Implementations too slow at this size to time in reasonable time.
    skip: tuple[str, ...] = ()


CONFIGS = (
    Config(
        "paper",
        batch=8,
        steps=300,
        input_size=256,
        hidden_size=550,
        repeats=5,
        skip=("mohaq_gru", "mohaq_lstm"),
    ),  # fmt: skip
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


def build(
    config: Config, device: torch.device
) -> tuple[dict[str, Callable[[Tensor, Tensor], Tensor]], list[nn.Module]]:
    """Name -> a function of batch-first features and lengths; and every module (for train/eval)."""
    hidden, layers = config.hidden_size, config.layers
    ours = {
        "mohaq_sru": Stack(lambda n, name: SRULayer(n, hidden, layer=name), config),
        "mohaq_gru": Stack(lambda n, name: GRULayer(n, hidden, layer=name), config),
        "mohaq_lstm": Stack(lambda n, name: LSTMLayer(n, hidden, layer=name), config),
    }
    runs: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        name: module.to(device) for name, module in ours.items()
    }
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


def naive_recurrence(u: Tensor, f_in: Tensor, r_in: Tensor, hw: Tensor, v_f: Tensor, v_r: Tensor,
                     b_f: Tensor, b_r: Tensor) -> Tensor:  # fmt: skip
    """The SRU recurrence as a per-step autograd loop over ``(D, T, B, H)`` tensors."""
    c = u.new_zeros(u.shape[0], u.shape[2], u.shape[3])
    v_f, v_r, b_f, b_r = (p[:, None, :] for p in (v_f, v_r, b_f, b_r))
    outputs = []
    for t in range(u.shape[1]):
        f = torch.sigmoid(f_in[:, t] + v_f * c + b_f)
        r = torch.sigmoid(r_in[:, t] + v_r * c + b_r)
        c = f * c + (1 - f) * u[:, t]
        outputs.append(r * c + (1 - r) * hw[:, t])
    return torch.stack(outputs, dim=1)


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


def bench_config(config: Config, device: torch.device, skip: set[str]) -> dict[str, object]:
    torch.manual_seed(0)
    runs, modules = build(config, device)
    runs = {n: run for n, run in runs.items() if n not in skip and n not in config.skip}
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

    # The recurrence alone, fused vs a per-step autograd loop.
    d, t, b, h = 2, config.steps, config.batch, config.hidden_size
    tensors = [torch.randn(d, t, b, h, device=device, requires_grad=True) for _ in range(4)]
    vectors = [torch.randn(d, h, device=device, requires_grad=True) for _ in range(4)]
    recurrence, _ = time_round_robin(
        {
            "fused": lambda: sru_recurrence(*tensors, *vectors)[0].sum().backward(),
            "naive": lambda: naive_recurrence(*tensors, *vectors).sum().backward(),
        },
        config.repeats,
        device,
    )
    ratios = {
        "forward": {f"mohaq_sru/{n}": forward["mohaq_sru"] / s for n, s in forward.items()},
        "forward_backward": {f"mohaq_sru/{n}": both["mohaq_sru"] / s for n, s in both.items()},
        "recurrence_fused/naive": recurrence["fused"] / recurrence["naive"],
        "forward_of_minima": {f"mohaq_sru/{n}": forward_min["mohaq_sru"] / s
                              for n, s in forward_min.items()},
        "forward_backward_of_minima": {f"mohaq_sru/{n}": both_min["mohaq_sru"] / s
                                       for n, s in both_min.items()},
    }  # fmt: skip
    return {
        "config": asdict(config),
        "forward_s": forward,
        "forward_backward_s": both,
        "forward_min_s": forward_min,
        "forward_backward_min_s": both_min,
        "recurrence_forward_backward_s": recurrence,
        "ratios": ratios,
    }


def markdown(results: dict[str, object]) -> str:
    lines = [
        "# Recurrent layer speed",
        "",
        f"Device: {results['device']}; torch {results['torch']}; threads {results['threads']}; "
        f"{results['machine']}. Median of the repeats, seconds per call; ratio = mohaq_sru / column "
        "(below 1: ours is faster); the ratio of the minima is less sensitive to other load on the machine. Generated by `benchmarks/bench_recurrence.py`.",
        "",
    ]
    for entry in results["configs"]:  # type: ignore[union-attr]
        config = entry["config"]
        lines += [
            f"## {config['name']}: batch {config['batch']}, T {config['steps']}, input "
            f"{config['input_size']}, hidden {config['hidden_size']} x 2 directions, "
            f"{config['layers']} layers, {config['repeats']} repeats",
            "",
            "| implementation | forward (s) | ratio | ratio of minima | forward+backward (s) "
            "| ratio | ratio of minima |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, seconds in entry["forward_s"].items():
            both = entry["forward_backward_s"][name]
            key, ratios = f"mohaq_sru/{name}", entry["ratios"]
            lines.append(
                f"| {name} | {seconds:.4f} | {ratios['forward'][key]:.2f} "
                f"| {ratios['forward_of_minima'][key]:.2f} | {both:.4f} "
                f"| {ratios['forward_backward'][key]:.2f} "
                f"| {ratios['forward_backward_of_minima'][key]:.2f} |"
            )
        rec = entry["recurrence_forward_backward_s"]
        lines += [
            "",
            f"SRU recurrence alone, forward+backward: fused {rec['fused']:.4f} s, per-step "
            f"autograd loop {rec['naive']:.4f} s (ratio "
            f"{entry['ratios']['recurrence_fused/naive']:.3f}).",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", nargs="*", default=[c.name for c in CONFIGS])
    parser.add_argument("--skip", nargs="*", default=[], help="implementations to leave out")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="intra-op threads (default: torch's); 1 is steadier on a shared machine, where a "
        "multi-threaded kernel stalls whenever another process holds one of its cores",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    results: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average at start {os.getloadavg()[0]:.1f}",
        "configs": [],
    }
    for config in CONFIGS:
        if config.name in args.configs:
            print(f"config {config.name} ...", flush=True)
            entry = bench_config(config, device, set(args.skip))
            results["configs"].append(entry)  # type: ignore[union-attr]
            print(json.dumps(entry["ratios"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recurrence.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "recurrence.md").write_text(markdown(results))
    print((args.out / "recurrence.md").read_text())


if __name__ == "__main__":
    main()
