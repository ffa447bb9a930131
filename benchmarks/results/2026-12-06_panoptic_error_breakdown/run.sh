#!/bin/bash
# plan.txt: the panoptic error breakdown of FA1, FA2 and IP10.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
C=configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml
for r in alpha_FA1 alpha_FA2; do
  .venv/bin/python -m benchmarks.panoptic_error_breakdown --config-file $C \
    --weights output/$r/model_final.pth --output output/breakdown_$r > output/breakdown_$r.log 2>&1
done
.venv/bin/python -m benchmarks.panoptic_error_breakdown --config-file $C \
  --weights output/imgprop_IP10/model_final.pth --output output/breakdown_imgprop_IP10 \
  MODEL.KNET.IMAGE_PROPOSALS 10 > output/breakdown_imgprop_IP10.log 2>&1
