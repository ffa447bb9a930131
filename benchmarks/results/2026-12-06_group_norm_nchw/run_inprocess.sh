#!/bin/bash
# plan_inprocess.txt: both variants in one process, after results/2026-12-06_amd_baseline/run2.sh.
cd "$(dirname "$0")/../../.."

D=/work/main/benchmarks/results/2026-12-06_group_norm_nchw
cd /tmp/wt || exit 1
echo "$(date -u +%H:%M:%S) start"
PYTHONPATH=/tmp/wt DETECTRON2_DATASETS=/work/main/output/d2data .venv/bin/python $D/inprocess.py $D/inprocess.json \
  --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  OUTPUT_DIR /tmp/gn_inprocess SOLVER.TIME_BUDGET.SECONDS 0 > $D/inprocess_stdout.txt 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
