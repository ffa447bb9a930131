#!/bin/bash
# plan.txt: AB3 (the recipe, SEED 3) then NSA3 (neck stride 4, targets at stride 4, SEED 3).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/$name --baselines $B "$@" > output/$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run amd_AB3 SEED 3
run nsa_NSA3 SEED 3 MODEL.KNET.NECK.OUT_STRIDE 4 MODEL.KNET.MASK_ASSIGN_STRIDE 4
