#!/bin/bash
# 300-iteration step timings, NUM_STAGES 1 and 3, of the two 10-minute recipes
cd /work/main
mkdir -p output/stages_timing
for T in panoptic instance; do
  for S in 1 3; do
    /usr/bin/time -v -o output/stages_timing/${T}_s$S.time.txt env DETECTRON2_DATASETS=output/d2data \
      .venv/bin/python train_net.py --config-file configs/synthetic/$T/knet_R18_tiny_16k_bf16_keep_freed.yaml \
      OUTPUT_DIR output/stages_timing/${T}_s$S MODEL.DEVICE cpu MODEL.KNET.NUM_STAGES $S \
      SOLVER.MAX_ITER 300 SOLVER.STEPS "(240,280)" TEST.EVAL_PERIOD 0 > output/stages_timing/${T}_s$S.log 2>&1
    echo "$T s$S rc=$?"
  done
done
