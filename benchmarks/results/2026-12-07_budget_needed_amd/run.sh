#!/bin/bash
# plan.txt: instance recipe at 3x its budget (SEED 2), then panoptic recipe at 2x (SEED 1).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> <budget s> [overrides...]
  name=$1; task=$2; budget=$3; shift 3
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --time-budget $budget --output output/$name --baselines $B \
    SOLVER.TIME_BUDGET.SECONDS $((budget - 10)) "$@" > output/$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run bn_inst3x_s2 instance 1800 SEED 2
run bn_pan2x_s1 panoptic 1200 SEED 1
