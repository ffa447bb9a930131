#!/bin/bash
# Paired step timing of the 10-minute semantic recipe (knet_upernet_tiny_16k_bf16_keep_freed.yaml:
# 16k split, bf16, KEEP_FREED_HOST_MEMORY) with and without channels-last training:
# A B A B, 300 iterations each.
set -e
cd "$(dirname "$0")/../../.."
O=output/cl128sem
for r in 1 2; do
  for v in nchw channels_last; do
    cl=False; [ $v = channels_last ] && cl=True
    mkdir -p $O
    /usr/bin/time -v -o $O/${v}_$r.time.txt env DETECTRON2_DATASETS=output/d2data \
      .venv/bin/python train_net.py \
      --config-file configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml \
      OUTPUT_DIR $O/${v}_$r SOLVER.CHANNELS_LAST $cl \
      SOLVER.MAX_ITER 300 SOLVER.STEPS "(240,280)" TEST.EVAL_PERIOD 0 > $O/${v}_$r.log 2>&1
  done
done
