#!/bin/bash
# plan.txt: AB1 (the panoptic recipe, SEED 1) on the AMD VM, after the runs of
# results/2026-12-06_no_object_weight_low.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_no_object_weight_low/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
echo "$(date -u +%H:%M:%S) start AB1"
/usr/bin/time -v -o output/amd_AB1.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --output output/amd_AB1 --baselines $B > output/amd_AB1.log 2>&1
echo "$(date -u +%H:%M:%S) end AB1 rc=$?"
