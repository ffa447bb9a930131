#!/bin/bash
# plan.txt: INS1 (instance recipe + NECK.OUT_STRIDE 4, SEED 1) against IB1 of
# results/2026-12-06_instance_channels_last_recipe; then, only if INS1 beats IB1, IB2 (the
# recipe, SEED 2) and INS2 (the change, SEED 2).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task instance --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/$name --baselines $B "$@" > output/$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
ap() { .venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['value'])" "$1"; }
run ins_INS1 MODEL.KNET.NECK.OUT_STRIDE 4
a=$(ap output/ins_INS1/benchmark_summary.json); b=$(ap output/icl_IB1/benchmark_summary.json)
echo "INS1 $a IB1 $b"
if .venv/bin/python -c "import sys; sys.exit(0 if float('$a') > float('$b') else 1)"; then
  run ins_IB2 SEED 2
  run ins_INS2 SEED 2 MODEL.KNET.NECK.OUT_STRIDE 4
else
  echo "INS1 does not beat IB1: IB2 and INS2 not run (plan.txt)"
fi
