#!/bin/bash
# plan.txt: breakdown of TS1 and TS2, then the thing-score threshold on both (no training).
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_thing_softmax/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
for r in TS1 TS2; do
  [ -f output/softmax_$r/model_final.pth ] || { echo "no $r"; continue; }
  echo "$(date -u +%H:%M:%S) breakdown $r"
  .venv/bin/python -m benchmarks.panoptic_error_breakdown \
    --config-file output/softmax_$r/config.yaml --weights output/softmax_$r/model_final.pth \
    --output output/breakdown_softmax_$r > output/breakdown_softmax_$r.log 2>&1
done
echo "$(date -u +%H:%M:%S) threshold"
/usr/bin/time -v -o output/score_thr_softmax.time.txt .venv/bin/python -m benchmarks.panoptic_score_threshold \
  --config-file output/softmax_TS1/config.yaml \
  --weights output/softmax_TS1/model_final.pth output/softmax_TS2/model_final.pth \
  --output output/score_thr_softmax > output/score_thr_softmax.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
