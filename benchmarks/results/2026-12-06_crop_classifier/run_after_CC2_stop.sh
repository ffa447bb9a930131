#!/bin/bash
# The rest of run.sh after CC2 was stopped (outcome.txt): CCI, then the breakdown of CC1.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
echo "$(date -u +%H:%M:%S) start CCI"
/usr/bin/time -v -o output/crop_CCI.time.txt .venv/bin/python -m benchmarks.train_synthetic \
  --task instance --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --output output/crop_CCI --baselines $B MODEL.KNET.CROP_CLASSIFIER.ENABLED True \
  > output/crop_CCI.log 2>&1
echo "$(date -u +%H:%M:%S) end CCI rc=$?"
.venv/bin/python -m benchmarks.panoptic_error_breakdown \
  --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --weights output/crop_CC1/model_final.pth --output output/breakdown_crop_CC1 \
  MODEL.KNET.CROP_CLASSIFIER.ENABLED True > output/breakdown_crop_CC1.log 2>&1
echo "$(date -u +%H:%M:%S) breakdown done"
