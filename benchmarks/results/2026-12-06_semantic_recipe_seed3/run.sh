#!/bin/bash
# plan.txt: the committed semantic recipe with SEED 3.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
/usr/bin/time -v -o output/semseed3.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task semantic --config-file configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml \
  --output output/semseed3 \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json SEED 3 \
  > output/semseed3.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
