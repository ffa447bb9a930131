#!/bin/bash
# plan.txt: the panoptic 10-minute recipe with one-to-many training of the early stages, B then C.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
for spec in "B 2 1" "C 3 2"; do
  set -- $spec
  echo "$(date -u +%H:%M:%S) start $1"
  /usr/bin/time -v -o output/o2m_$1.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/o2m_$1 --baselines $B \
    MODEL.KNET.MATCHER.ONE_TO_MANY_COPIES $2 MODEL.KNET.MATCHER.ONE_TO_MANY_STAGES $3 \
    > output/o2m_$1.log 2>&1
  echo "$(date -u +%H:%M:%S) end $1 rc=$?"
done
