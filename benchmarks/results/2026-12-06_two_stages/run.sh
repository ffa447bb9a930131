#!/bin/bash
# plan.txt: S1, then S2 only if S1 is above FA1 (24.18); after the instance runs of
# results/2026-12-06_alpha_gamma_instance.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_alpha_gamma_instance/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/two_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/two_$name --baselines $B MODEL.KNET.NUM_STAGES 2 "$@" \
    > output/two_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run S1
v=$(python3 -c "import json; print(json.load(open('output/two_S1/benchmark_summary.json'))['value'])")
if python3 -c "import sys; sys.exit(0 if $v > 24.18 else 1)"; then
  run S2 SEED 2
else
  echo "S1 $v <= 24.18: S2 not run (plan.txt)"
fi
