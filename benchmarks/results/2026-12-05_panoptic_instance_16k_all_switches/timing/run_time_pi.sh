#!/bin/bash
# 300-iteration timings of the panoptic and instance models with every throughput switch
cd /work/main
for T in panoptic instance; do
  /usr/bin/time -v -o output/pi_timing/${T}.time.txt env DETECTRON2_DATASETS=output/d2data \
    .venv/bin/python train_net.py --config-file configs/synthetic/$T/knet_R18_tiny.yaml \
    OUTPUT_DIR output/pi_timing/$T MODEL.DEVICE cpu DATASETS.TRAIN "('knet_synth_${T}_train16k',)" \
    SOLVER.AMP.ENABLED True SOLVER.AMP.PRECISION bf16 SOLVER.CHANNELS_LAST True \
    KEEP_FREED_HOST_MEMORY True MODEL.KNET.MASK_ASSIGN_STRIDE 2 \
    SOLVER.MAX_ITER 300 SOLVER.STEPS "(240,280)" TEST.EVAL_PERIOD 0 > output/pi_timing/$T.log 2>&1
done
