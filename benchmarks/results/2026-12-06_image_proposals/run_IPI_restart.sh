#!/bin/bash
cd /work/main
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
echo "$(date -u +%H:%M:%S) start IPI (N 10), restarted by hand"
/usr/bin/time -v -o output/imgprop_IPI.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task instance --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --output output/imgprop_IPI --baselines $B MODEL.KNET.IMAGE_PROPOSALS 10 \
  > output/imgprop_IPI.log 2>&1
echo "$(date -u +%H:%M:%S) end IPI rc=$?"
