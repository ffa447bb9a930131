#!/bin/bash
# plan.txt: G1, then G2 if G1 gains (10-minute panoptic recipe with focal gamma 1).
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_crop_classifier/run_after_CC2_stop.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> [overrides...]
  name=$1; shift
  echo "$(date -u +%H:%M:%S) start $name"
  /usr/bin/time -v -o output/gamma_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/gamma_$name --baselines $B MODEL.KNET.FOCAL_GAMMA 1.0 "$@" \
    > output/gamma_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
run G1
v=$(python3 -c "import json; print(json.load(open('output/gamma_G1/benchmark_summary.json'))['value'])")
if python3 -c "import sys; sys.exit(0 if $v > 24.18 else 1)"; then
  run G2 SEED 2
else
  echo "G1 $v <= 24.18: G2 not run (plan.txt)"
fi
