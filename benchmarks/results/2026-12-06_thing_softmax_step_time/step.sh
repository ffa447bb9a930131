#!/bin/bash
# step.sh NAME [overrides...]: the panoptic recipe for 150 iterations, no time budget, no
# evaluation during training, into a fresh /tmp/step_NAME; log appended to output/step_NAME.log.
cd "$(dirname "$0")/../../.."
name=$1; shift
rm -rf /tmp/step_$name
exec .venv/bin/python -m benchmarks.train_synthetic --task panoptic \
  --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --output /tmp/step_$name \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json \
  SOLVER.TIME_BUDGET.SECONDS 0 SOLVER.MAX_ITER 150 SOLVER.STEPS "(120,140)" TEST.EVAL_PERIOD 0 \
  "$@" >> output/step_$name.log 2>&1
