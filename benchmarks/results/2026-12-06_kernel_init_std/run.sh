#!/bin/bash
# plan.txt: P1, P0, I1 (10-minute recipes, KERNEL_INIT_STD 0.125 or unchanged).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
for spec in "P1 panoptic 0.125" "P0 panoptic -" "I1 instance 0.125"; do
  set -- $spec
  extra=""; [ "$3" != "-" ] && extra="MODEL.KNET.KERNEL_INIT_STD $3"
  echo "$(date -u +%H:%M:%S) start $1"
  /usr/bin/time -v -o output/initstd_$1.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $2 --config-file configs/synthetic/$2/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/initstd_$1 --baselines $B $extra > output/initstd_$1.log 2>&1
  echo "$(date -u +%H:%M:%S) end $1 rc=$?"
done
