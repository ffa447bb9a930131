#!/bin/bash
# plan.txt: NSA1 and NSA2 (panoptic, neck stride 4 with targets at stride 4), after the
# in-process timing of results/2026-12-06_group_norm_nchw.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_group_norm_nchw/run_inprocess.sh" > /dev/null; do sleep 5; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/nsa_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/nsa_$name --baselines $B "$@" > output/nsa_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run NSA1 MODEL.KNET.NECK.OUT_STRIDE 4 MODEL.KNET.MASK_ASSIGN_STRIDE 4
run NSA2 MODEL.KNET.NECK.OUT_STRIDE 4 MODEL.KNET.MASK_ASSIGN_STRIDE 4 SEED 2
