#!/bin/bash
# plan.txt: the instance recipe with 6.5 times its training budget, once.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/inst_6x_intel.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task instance --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --time-budget 3900 --output output/inst_6x_intel \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json \
  SOLVER.TIME_BUDGET.SECONDS 3830 > output/inst_6x_intel.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
