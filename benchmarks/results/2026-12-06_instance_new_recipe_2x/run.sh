#!/bin/bash
# plan.txt: the instance recipe (stride-4 masks, focal alpha 0.5) with twice its budget, SEED 1.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/inst_2x.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task instance --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --time-budget 1200 --output output/inst_2x \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json \
  SOLVER.TIME_BUDGET.SECONDS 1190 > output/inst_2x.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
