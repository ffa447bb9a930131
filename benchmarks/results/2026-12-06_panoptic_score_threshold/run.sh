#!/bin/bash
# plan.txt: the thing-score threshold of the panoptic merge, chosen on the tune split.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
/usr/bin/time -v -o output/score_thr.time.txt .venv/bin/python -m benchmarks.panoptic_score_threshold \
  --weights output/denoise_P0/model_final.pth output/soft_P0/model_final.pth \
  output/initstd_P0/model_final.pth output/segce_P0/model_final.pth \
  --output output/score_thr > output/score_thr.log 2>&1
echo "rc=$?"
