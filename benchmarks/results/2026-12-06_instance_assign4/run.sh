#!/bin/bash
# plan.txt: IAA1 / IAA2 (the instance recipe + MASK_ASSIGN_STRIDE 4, SEED 1 / 2)
# against INA1 / INA2 of results/2026-12-06_instance_stride4_alpha.
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
run iaa_IAA1 MODEL.KNET.MASK_ASSIGN_STRIDE 4
run iaa_IAA2 SEED 2 MODEL.KNET.MASK_ASSIGN_STRIDE 4
