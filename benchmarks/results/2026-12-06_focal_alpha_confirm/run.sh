#!/bin/bash
# plan.txt: FA1, FA2, FI (10-minute recipes with focal alpha 0.5).
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_optimizer_confirm/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> [overrides...]
  name=$1; task=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/alpha_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/alpha_$name --baselines $B MODEL.KNET.FOCAL_ALPHA 0.5 "$@" \
    > output/alpha_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run FA1 panoptic
run FA2 panoptic SEED 2
run FI instance
