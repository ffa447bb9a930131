#!/bin/bash
# plan.txt: AG1, then I02 and AG2 only if AG1 gains >= 3 mask AP over I0 (22.83).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/agi_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task instance --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/agi_$name --baselines $B "$@" > output/agi_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
AG="MODEL.KNET.FOCAL_ALPHA 0.5 MODEL.KNET.FOCAL_GAMMA 1.0"
run AG1 $AG
v=$(python3 -c "import json; print(json.load(open('output/agi_AG1/benchmark_summary.json'))['value'])")
if python3 -c "import sys; sys.exit(0 if $v - 22.83 >= 3 else 1)"; then
  run I02 SEED 2
  run AG2 $AG SEED 2
else
  echo "AG1 $v: less than 3 above 22.83, I02 and AG2 not run (plan.txt)"
fi
