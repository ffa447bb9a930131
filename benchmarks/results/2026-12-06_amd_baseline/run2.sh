#!/bin/bash
# plan.txt's rule: NS1 (29.91) is above AB1 (29.69), so NS2 (neck stride 4, SEED 2) and AB2 (the
# recipe, SEED 2) run on this VM; NL1 (26.94) is not, so no NL2. After the paired timing of
# results/2026-12-06_group_norm_nchw.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_group_norm_nchw/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <output name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/$name --baselines $B "$@" > output/$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run ns_NS2 MODEL.KNET.NECK.OUT_STRIDE 4 SEED 2
run amd_AB2 SEED 2
