#!/usr/bin/env bash
# The main job on the embedded default data, CPU only:
#   1. generate the synthetic TIMIT-format corpus (cached after the first run),
#   2. train the quickstart SRU (mohaq fit),
#   3. search per-point precisions on Bitfusion (mohaq search, inference-only stage),
#   4. retrain a few beacons with QAT and continue the search with them (mohaq beacons),
#   5. print where the reports are.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/quickstart
rm -rf "$run/checkpoints" "$run/search"

mohaq fit -c lightning_configs/quickstart.yaml
mohaq test -c lightning_configs/quickstart.yaml --ckpt_path "$run/checkpoints/best.ckpt"
mohaq search -c lightning_configs/quickstart.yaml -c lightning_configs/quickstart_search.yaml \
    --checkpoint "$run/checkpoints/best.ckpt"
mohaq beacons -c lightning_configs/quickstart.yaml -c lightning_configs/quickstart_beacons.yaml \
    --checkpoint "$run/checkpoints/best.ckpt"

echo
echo "Report:       $run/search/summary.md (inference-only), $run/search/beacon_summary.md (beacons)"
echo "Pareto front: $run/search/pareto.csv, $run/search/pareto.png"
echo "TensorBoard:  tensorboard --logdir $run"
