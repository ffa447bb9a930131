#!/bin/bash
# plan.txt: TS1 (panoptic), TSI (instance); TS2 if TS1 > 24.18; I02 (if not run already) and
# TSI2 if TSI >= 22.83 + 3. After the runs of results/2026-12-06_two_stages.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_(two_stages|alpha_gamma_instance)/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> [overrides...]
  name=$1; task=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/softmax_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/softmax_$name --baselines $B "$@" > output/softmax_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
value() { python3 -c "import json; print(json.load(open('$1/benchmark_summary.json'))['value'])"; }
run TS1 panoptic MODEL.KNET.THING_SOFTMAX True
run TSI instance MODEL.KNET.THING_SOFTMAX True
v=$(value output/softmax_TS1)
if python3 -c "import sys; sys.exit(0 if $v > 24.18 else 1)"; then
  run TS2 panoptic MODEL.KNET.THING_SOFTMAX True SEED 2
else
  echo "TS1 $v <= 24.18: TS2 not run (plan.txt)"
fi
v=$(value output/softmax_TSI)
if python3 -c "import sys; sys.exit(0 if $v - 22.83 >= 3 else 1)"; then
  [ -f output/agi_I02/benchmark_summary.json ] || run I02 instance SEED 2
  run TSI2 instance MODEL.KNET.THING_SOFTMAX True SEED 2
else
  echo "TSI $v: less than 3 above 22.83, TSI2 not run (plan.txt)"
fi
