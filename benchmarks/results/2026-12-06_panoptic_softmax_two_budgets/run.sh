#!/bin/bash
# plan.txt: the panoptic recipe (softmax thing classifier) with twice its budget, once; then its
# error breakdown. After the fresh-clone quickstart.
cd "$(dirname "$0")/../../.."
while pgrep -f "benchmarks.quickstart" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
C=configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/pan_softmax_2x.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task panoptic --config-file $C --time-budget 1200 --output output/pan_softmax_2x \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json \
  SOLVER.TIME_BUDGET.SECONDS 1190 > output/pan_softmax_2x.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
.venv/bin/python -m benchmarks.panoptic_error_breakdown --config-file $C \
  --weights output/pan_softmax_2x/model_final.pth --output output/breakdown_pan_softmax_2x \
  > output/breakdown_pan_softmax_2x.log 2>&1
echo "$(date -u +%H:%M:%S) breakdown rc=$?"
