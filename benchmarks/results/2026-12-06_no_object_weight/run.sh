#!/bin/bash
# plan.txt: NW1, then NW2 only if NW1 is above TS1. After the thing_softmax runs and analysis.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_thing_softmax(_analysis)?/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/noobj_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/noobj_$name --baselines $B \
    MODEL.KNET.THING_SOFTMAX True MODEL.KNET.NO_OBJECT_WEIGHT 0.4 "$@" > output/noobj_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
value() { python3 -c "import json; print(json.load(open('$1/benchmark_summary.json'))['value'])"; }
run NW1
v=$(value output/noobj_NW1); ts1=$(value output/softmax_TS1)
if python3 -c "import sys; sys.exit(0 if $v > $ts1 else 1)"; then
  run NW2 SEED 2
else
  echo "NW1 $v <= TS1 $ts1: NW2 not run (plan.txt)"
fi
