#!/bin/bash
# plan.txt: S1, P0, SI, I0 (10-minute recipes, soft grouping on or unchanged).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
for spec in "S1 panoptic True" "P0 panoptic -" "SI instance True" "I0 instance -"; do
  set -- $spec
  extra=""; [ "$3" != "-" ] && extra="MODEL.KNET.SOFT_GROUPING $3"
  echo "$(date -u +%H:%M:%S) start $1"
  /usr/bin/time -v -o output/soft_$1.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $2 --config-file configs/synthetic/$2/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/soft_$1 --baselines $B $extra > output/soft_$1.log 2>&1
  echo "$(date -u +%H:%M:%S) end $1 rc=$?"
done
