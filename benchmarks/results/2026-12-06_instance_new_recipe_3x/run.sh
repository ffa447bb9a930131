#!/bin/bash
# plan.txt: the instance recipe (stride-4 masks, focal alpha 0.5) with three times its budget, SEED 1.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/inst_3x.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task instance --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --time-budget 1800 --output output/inst_3x \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json \
  SOLVER.TIME_BUDGET.SECONDS 1790 > output/inst_3x.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
