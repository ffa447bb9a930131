#!/bin/bash
# plan.txt: the thing-score threshold for the focal-alpha-0.5 panoptic checkpoints.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_focal_alpha_confirm/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/score_thr_alpha05.time.txt .venv/bin/python -m benchmarks.panoptic_score_threshold \
  --weights output/alpha_FA1/model_final.pth output/alpha_FA2/model_final.pth \
  --output output/score_thr_alpha05 > output/score_thr_alpha05.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
