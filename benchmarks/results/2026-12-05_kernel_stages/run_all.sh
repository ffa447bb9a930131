#!/bin/bash
# Part 2 of plan.txt: the schedules from the part-1 timings (panoptic t3/t1 = 1.289 -> 6400
# iterations, instance 1.265 -> 6300), one run after the other.
cd /work/main
export DETECTRON2_DATASETS=output/d2data
mkdir -p output/stages
B=benchmarks/results/2026-12-04_quickstart_v2/baselines.json
P=configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml
I=configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml
SP='SOLVER.MAX_ITER 6400 SOLVER.STEPS (5120,5973) TEST.EVAL_PERIOD 1600'
SI='SOLVER.MAX_ITER 6300 SOLVER.STEPS (5040,5880) TEST.EVAL_PERIOD 1575'
run() { name=$1; shift; echo "$(date -u +%H:%M:%S) start $name"; /usr/bin/time -v -o output/stages/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic "$@" > output/stages/$name.log 2>&1; echo "$(date -u +%H:%M:%S) end $name rc=$?"; }
run pan_s1 --task panoptic --config-file $P --output output/stages/pan_s1 --baselines $B MODEL.KNET.NUM_STAGES 1 $SP
run inst_s1 --task instance --config-file $I --output output/stages/inst_s1 --baselines $B MODEL.KNET.NUM_STAGES 1 $SI
run pan_s1_alpha05 --task panoptic --config-file $P --output output/stages/pan_s1_alpha05 --baselines $B MODEL.KNET.NUM_STAGES 1 MODEL.KNET.FOCAL_ALPHA 0.5 $SP
run inst_s1_alpha05 --task instance --config-file $I --output output/stages/inst_s1_alpha05 --baselines $B MODEL.KNET.NUM_STAGES 1 MODEL.KNET.FOCAL_ALPHA 0.5 $SI
