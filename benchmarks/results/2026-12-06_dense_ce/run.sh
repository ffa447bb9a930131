#!/bin/bash
# plan.txt: C1, P0, CI, I0 (10-minute recipes, with / without the dense cross-entropy).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
for spec in "C1 panoptic 1.0" "P0 panoptic -" "CI instance 1.0" "I0 instance -"; do
  set -- $spec
  extra=""; [ "$3" != "-" ] && extra="MODEL.KNET.SEG_CE_WEIGHT $3"
  echo "$(date -u +%H:%M:%S) start $1"
  /usr/bin/time -v -o output/segce_$1.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $2 --config-file configs/synthetic/$2/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/segce_$1 --baselines $B $extra > output/segce_$1.log 2>&1
  echo "$(date -u +%H:%M:%S) end $1 rc=$?"
done
