#!/bin/bash
cd /work/main
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-04_quickstart_v2/baselines.json
P=configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml
I=configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml
run() { name=$1; shift; echo "$(date -u +%H:%M:%S) start $name"; /usr/bin/time -v -o output/props/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic "$@" > output/props/$name.log 2>&1; echo "$(date -u +%H:%M:%S) end $name rc=$?"; }
run pan_p10 --task panoptic --config-file $P --output output/props/pan_p10 --baselines $B MODEL.KNET.NUM_PROPOSALS 10
run inst_p10 --task instance --config-file $I --output output/props/inst_p10 --baselines $B MODEL.KNET.NUM_PROPOSALS 10
run pan_p10_alpha05 --task panoptic --config-file $P --output output/props/pan_p10_alpha05 --baselines $B MODEL.KNET.NUM_PROPOSALS 10 MODEL.KNET.FOCAL_ALPHA 0.5
run inst_p10_alpha05 --task instance --config-file $I --output output/props/inst_p10_alpha05 --baselines $B MODEL.KNET.NUM_PROPOSALS 10 MODEL.KNET.FOCAL_ALPHA 0.5
