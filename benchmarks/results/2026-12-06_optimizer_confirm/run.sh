#!/bin/bash
# plan.txt: OPT2, P02, OI, OPT3 (10-minute recipes; the semantic model's optimizer).
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_position_and_optimizer/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
OPT="SOLVER.BASE_LR 0.002 SOLVER.WEIGHT_DECAY 0.0005 SOLVER.WEIGHT_DECAY_NORM 0.0005"
run() {  # run <name> <task> [overrides...]
  name=$1; task=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/optc_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/optc_$name --baselines $B "$@" > output/optc_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run OPT2 panoptic $OPT SEED 2
run P02 panoptic SEED 2
run OI instance $OPT
run OPT3 panoptic SOLVER.BASE_LR 0.003 SOLVER.WEIGHT_DECAY 0.0005 SOLVER.WEIGHT_DECAY_NORM 0.0005
