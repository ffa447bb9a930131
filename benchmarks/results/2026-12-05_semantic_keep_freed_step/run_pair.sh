#!/bin/bash
# Paired step timing of the semantic 16k/bf16/channels-last recipe, without and with
# KEEP_FREED_HOST_MEMORY: A B A B, 400 iterations each, nothing else running.
set -e
cd /work/main
for r in 1 2; do
  for v in default keep_freed; do
    extra=""; [ $v = keep_freed ] && extra="KEEP_FREED_HOST_MEMORY True"
    /usr/bin/time -v -o output/kf/${v}_$r.time.txt env DETECTRON2_DATASETS=output/d2data \
      .venv/bin/python train_net.py --config-file configs/synthetic/semantic/knet_upernet_tiny_16k_bf16.yaml \
      OUTPUT_DIR output/kf/${v}_$r SOLVER.MAX_ITER 400 SOLVER.STEPS "(320,380)" TEST.EVAL_PERIOD 0 $extra \
      > output/kf/${v}_$r.log 2>&1
  done
done
