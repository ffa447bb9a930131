#!/bin/bash
# plan.txt: LS1, LS2 (10-minute panoptic recipe, LR steps at 60% / 85%).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> [overrides...]
  name=$1; task=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/lrsteps_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/lrsteps_$name --baselines $B SOLVER.STEPS "(3000, 4250)" "$@" \
    > output/lrsteps_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run LS1 panoptic
run LS2 panoptic SEED 2
