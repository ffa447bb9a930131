#!/bin/bash
# Paired step timing of the 10-minute panoptic recipe (knet_R18_tiny_16k_bf16_keep_freed.yaml:
# 16k split, bf16, KEEP_FREED_HOST_MEMORY, mask assign stride 2, NCHW) with and without channels-last
# training, at the current model code (matrix-form resizes on the CPU): A B A B, 300 iterations
# each, no time budget (SOLVER.TIME_BUDGET.SECONDS 0), no periodic evaluation.
set -e
cd "$(dirname "$0")/../../.."
O=output/cl128pan_intel
R=benchmarks/results/2026-12-05_panoptic_channels_last_intel
for r in 1 2; do
  for v in nchw channels_last; do
    cl=False; [ $v = channels_last ] && cl=True
    mkdir -p $O $R/${v}_$r
    /usr/bin/time -v -o $R/${v}_$r/time.txt env DETECTRON2_DATASETS=output/d2data \
      .venv/bin/python train_net.py \
      --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
      OUTPUT_DIR $O/${v}_$r SOLVER.CHANNELS_LAST $cl SOLVER.TIME_BUDGET.SECONDS 0 \
      SOLVER.MAX_ITER 300 SOLVER.STEPS "(240,280)" TEST.EVAL_PERIOD 0 > $R/${v}_$r/stdout.txt 2>&1
    grep "Overall training speed" $R/${v}_$r/stdout.txt
  done
done
