#!/bin/bash
# plan.txt: NL1 (panoptic, no-object weight 0.03); NL2 if NL1 > 34.09 (TS1).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> [overrides...]
  name=$1; task=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/nwl_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/nwl_$name --baselines $B "$@" > output/nwl_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
value() { python3 -c "import json; print(json.load(open('$1/benchmark_summary.json'))['value'])"; }
run NL1 panoptic MODEL.KNET.NO_OBJECT_WEIGHT 0.03
v=$(value output/nwl_NL1)
if python3 -c "import sys; sys.exit(0 if $v > 34.09 else 1)"; then
  run NL2 panoptic MODEL.KNET.NO_OBJECT_WEIGHT 0.03 SEED 2
else
  echo "NL1 $v <= 34.09: NL2 not run (plan.txt)"
fi
