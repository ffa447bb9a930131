#!/bin/bash
# plan.txt: the panoptic 10-minute recipe (590 s budget) with SEED 2, channels-last (the recipe
# as it is now) then NCHW (SOLVER.CHANNELS_LAST False), one after the other.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
R=benchmarks/results/2026-12-05_panoptic_layout_seed2
B=benchmarks/results/2026-12-05_quickstart_matrix_resize/baselines.json
mkdir -p output/pan_seed2
run() { name=$1; cl=$2; echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/pan_seed2/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/pan_seed2/$name --baselines $B SEED 2 SOLVER.CHANNELS_LAST $cl \
    > output/pan_seed2/$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"; }
run channels_last True
run nchw False
