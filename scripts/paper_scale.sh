#!/usr/bin/env bash
# The MOHAQ paper's SRU (lightning_configs/sru_timit.yaml) on a larger synthetic
# TIMIT-format corpus, CPU only, one command:
#   1. generate the corpus and train (mohaq fit; about an hour on 2 cores),
#   2. score the float model on the test split (mohaq test),
#   3. float, uniform and per-method PTQ rows, and the mixed-precision fronts
#      on Bit Fusion (benchmarks/bench_ptq.py) into benchmarks/results/paper_scale/.
# Set PTQ_SECTIONS to choose benchmark sections, e.g. PTQ_SECTIONS="baseline methods".
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/paper_scale
configs=(-c lightning_configs/sru_timit.yaml -c lightning_configs/sru_timit_synthetic.yaml)
out=benchmarks/results/paper_scale
mkdir -p "$out"

start=$(date +%s)
mohaq fit "${configs[@]}"
fit_seconds=$(( $(date +%s) - start ))
mohaq test "${configs[@]}" --ckpt_path "$run/checkpoints/best.ckpt" | tee "$out/test.txt"
echo "fit: ${fit_seconds} s on $(nproc) CPUs (load $(cut -d' ' -f1 /proc/loadavg))" | tee "$out/fit_time.txt"

# shellcheck disable=SC2086
python benchmarks/bench_ptq.py \
    --config lightning_configs/sru_timit.yaml lightning_configs/sru_timit_synthetic.yaml \
    --checkpoint "$run/checkpoints/best.ckpt" --out "$out/ptq" \
    --sections ${PTQ_SECTIONS:-baseline methods front} --budget "${BUDGET:-60}"
echo "Results: $out/ptq.md"
