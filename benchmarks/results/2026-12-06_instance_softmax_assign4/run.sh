#!/bin/bash
# plan.txt: SA1 / SA2 (instance recipe + THING_SOFTMAX + MASK_ASSIGN_STRIDE 4, SEED 1 / 2).
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
run sa_SA1 MODEL.KNET.THING_SOFTMAX True MODEL.KNET.MASK_ASSIGN_STRIDE 4
run sa_SA2 SEED 2 MODEL.KNET.THING_SOFTMAX True MODEL.KNET.MASK_ASSIGN_STRIDE 4
