#!/bin/bash
cd /work/main
export DETECTRON2_DATASETS=output/d2data
mkdir -p output/intel
echo "$(date -u +%H:%M:%S) start"
/usr/bin/time -v -o output/intel/semantic_3900.time.txt .venv/bin/python -m benchmarks.train_synthetic --task semantic --config-file configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml --output output/intel/semantic_3900 --baselines benchmarks/results/2026-12-04_quickstart_v2/baselines.json SOLVER.MAX_ITER 3900 SOLVER.STEPS "(3120,3640)" TEST.EVAL_PERIOD 975 > output/intel/semantic_3900.log 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
