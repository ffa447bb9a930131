#!/bin/bash
# plan.txt: the semantic 10-minute recipe (590 s budget) with SEED 2, then SEED 3.
cd /work/main
export DETECTRON2_DATASETS=output/d2data
mkdir -p output/seeds
B=benchmarks/results/2026-12-05_quickstart_matrix_resize/baselines.json
run() { seed=$1; echo "$(date -u +%H:%M:%S) start seed $seed"; /usr/bin/time -v -o output/seeds/semantic_seed$seed.time.txt .venv/bin/python -m benchmarks.train_synthetic --task semantic --config-file configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml --output output/seeds/semantic_seed$seed --baselines $B SEED $seed > output/seeds/semantic_seed$seed.log 2>&1; echo "$(date -u +%H:%M:%S) end seed $seed rc=$?"; }
run 2
run 3
