#!/bin/bash
# plan.txt: the panoptic 10-minute recipe (590 s budget), now channels-last, once (SEED 1), as
# make quickstart trains it.
set -e
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
R=benchmarks/results/2026-12-05_panoptic_channels_last_intel
B=benchmarks/results/2026-12-05_quickstart_matrix_resize/baselines.json
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/pan_cl_intel.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --output output/pan_cl_intel --baselines $B > output/pan_cl_intel.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
