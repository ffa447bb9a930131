#!/bin/bash
# plan.txt: the panoptic recipe (softmax thing classifier) with twice its budget, SEED 2, once.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/pan_softmax_2x_seed2.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --time-budget 1200 --output output/pan_softmax_2x_seed2 \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json \
  SOLVER.TIME_BUDGET.SECONDS 1190 SEED 2 > output/pan_softmax_2x_seed2.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
