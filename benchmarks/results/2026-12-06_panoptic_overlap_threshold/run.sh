#!/bin/bash
# plan.txt: the panoptic merge's overlap threshold chosen on the tune split for AB1 / AB2 / AB3.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
D=benchmarks/results/2026-12-06_panoptic_overlap_threshold
/usr/bin/time -v -o $D/time.txt .venv/bin/python -m benchmarks.panoptic_score_threshold \
  --threshold overlap --weights output/amd_AB1/model_final.pth output/amd_AB2/model_final.pth \
  output/amd_AB3/model_final.pth --output output/overlap_thr > $D/run.log 2>&1
echo "rc=$?" >> $D/run.log
