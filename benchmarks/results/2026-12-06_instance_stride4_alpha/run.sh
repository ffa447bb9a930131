#!/bin/bash
# plan.txt: INA1 / INA2 (instance recipe + NECK.OUT_STRIDE 4 + FOCAL_ALPHA 0.5, SEED 1 / 2)
# against IB1 / IB2 of results/2026-12-06_instance_channels_last_recipe and _instance_neck_stride4.
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
run ina_INA1 MODEL.KNET.NECK.OUT_STRIDE 4 MODEL.KNET.FOCAL_ALPHA 0.5
run ina_INA2 SEED 2 MODEL.KNET.NECK.OUT_STRIDE 4 MODEL.KNET.FOCAL_ALPHA 0.5
