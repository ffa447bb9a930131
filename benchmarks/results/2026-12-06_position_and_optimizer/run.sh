#!/bin/bash
# plan.txt: PE1, P0, OPT, IE1, I0 (10-minute recipes; positional-encoding level, optimizer).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> [overrides...]
  name=$1; task=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/peopt_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/peopt_$name --baselines $B "$@" > output/peopt_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run PE1 panoptic MODEL.KNET.NECK.POS_ENCODING_LEVEL 1
run P0 panoptic
run OPT panoptic SOLVER.BASE_LR 0.002 SOLVER.WEIGHT_DECAY 0.0005 SOLVER.WEIGHT_DECAY_NORM 0.0005
run IE1 instance MODEL.KNET.NECK.POS_ENCODING_LEVEL 1
run I0 instance
