#!/bin/bash
# step.sh CHECKOUT NAME: the panoptic recipe for 400 iterations from CHECKOUT's code, no time
# budget, no evaluation during training, into a fresh /tmp/step_NAME; log appended to
# /work/main/output/step_NAME.log.
cd "$1" || exit 1
name=$2
rm -rf /tmp/step_$name
.venv/bin/python -c "import knet_d2, sys; print('knet_d2 from', knet_d2.__file__)" \
  >> /work/main/output/step_$name.log 2>&1
exec .venv/bin/python -m benchmarks.train_synthetic --task panoptic \
  --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
  --output /tmp/step_$name \
  --baselines benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json \
  SOLVER.TIME_BUDGET.SECONDS 0 SOLVER.MAX_ITER 400 SOLVER.STEPS "(320,380)" TEST.EVAL_PERIOD 0 \
  >> /work/main/output/step_$name.log 2>&1
