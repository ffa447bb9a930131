#!/bin/bash
# plan.txt: the error breakdown, with the unmatched segments by where they lie, of AB1-AB3.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
D=benchmarks/results/2026-12-06_panoptic_unmatched_segments
for r in AB1 AB2 AB3; do
  .venv/bin/python -m benchmarks.panoptic_error_breakdown \
    --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --weights output/amd_$r/model_final.pth --output $D/breakdown_$r > $D/breakdown_$r.stdout.txt 2>&1
  echo "$r rc=$?"
done
