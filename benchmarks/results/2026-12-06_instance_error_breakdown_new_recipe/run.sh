#!/bin/bash
# plan.txt: the instance error breakdown of the new recipe's 1x (two seeds) and 3x checkpoints.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
OUT=benchmarks/results/2026-12-06_instance_error_breakdown_new_recipe
for RUN in ina_INA1 ina_INA2 inst_3x; do
  .venv/bin/python -m benchmarks.instance_error_breakdown \
    --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --weights output/$RUN/model_final.pth --output $OUT/$RUN > $OUT/$RUN.log 2>&1 || exit 1
done
