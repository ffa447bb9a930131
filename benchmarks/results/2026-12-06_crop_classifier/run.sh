#!/bin/bash
# plan.txt: CC1, CC2, CCI (10-minute recipes with MODEL.KNET.CROP_CLASSIFIER), then breakdowns.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> [overrides...]
  name=$1; task=$2; shift 2
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/crop_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/crop_$name --baselines $B MODEL.KNET.CROP_CLASSIFIER.ENABLED True "$@" \
    > output/crop_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run CC1 panoptic
run CC2 panoptic SEED 2
run CCI instance
for r in CC1 CC2; do
  .venv/bin/python -m benchmarks.panoptic_error_breakdown \
    --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --weights output/crop_$r/model_final.pth --output output/breakdown_crop_$r \
    MODEL.KNET.CROP_CLASSIFIER.ENABLED True > output/breakdown_crop_$r.log 2>&1
done
echo "$(date -u +%H:%M:%S) breakdowns done"
