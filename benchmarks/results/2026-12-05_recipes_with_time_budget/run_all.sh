#!/bin/bash
# plan.txt: the three 10-minute recipes with their 590 s budget, one after the other.
cd /work/main
export DETECTRON2_DATASETS=output/d2data
mkdir -p output/budget
B=benchmarks/results/2026-12-04_quickstart_v2/baselines.json
run() { name=$1; cfg=$2; echo "$(date -u +%H:%M:%S) start $name"; /usr/bin/time -v -o output/budget/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic --task $name --config-file $cfg --output output/budget/$name --baselines $B > output/budget/$name.log 2>&1; echo "$(date -u +%H:%M:%S) end $name rc=$?"; }
run semantic configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml
run panoptic configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml
run instance configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml
