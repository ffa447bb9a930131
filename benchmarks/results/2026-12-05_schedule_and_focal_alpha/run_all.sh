#!/bin/bash
cd /work/main
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-04_quickstart_v2/baselines.json
P=configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml
I=configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml
run() { name=$1; shift; echo "$(date -u +%H:%M:%S) start $name"; /usr/bin/time -v -o output/sched/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic "$@" > output/sched/$name.log 2>&1; echo "$(date -u +%H:%M:%S) end $name rc=$?"; }
run pan_cosine --task panoptic --config-file $P --output output/sched/pan_cosine --baselines $B SOLVER.LR_SCHEDULER_NAME WarmupCosineLR
run inst_cosine --task instance --config-file $I --output output/sched/inst_cosine --baselines $B SOLVER.LR_SCHEDULER_NAME WarmupCosineLR
run pan_alpha05 --task panoptic --config-file $P --output output/sched/pan_alpha05 --baselines $B MODEL.KNET.FOCAL_ALPHA 0.5
run inst_alpha05 --task instance --config-file $I --output output/sched/inst_alpha05 --baselines $B MODEL.KNET.FOCAL_ALPHA 0.5
