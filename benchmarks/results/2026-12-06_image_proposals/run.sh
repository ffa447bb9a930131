#!/bin/bash
# plan.txt: IP20, IP10, IPS2, IPI (10-minute recipes with MODEL.KNET.IMAGE_PROPOSALS).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
run() {  # run <name> <task> <N> [overrides...]
  name=$1; task=$2; n=$3; shift 3
  echo "$(date -u +%H:%M:%S) start $name (N $n)"
  /usr/bin/time -v -o output/imgprop_$name.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task $task --config-file configs/synthetic/$task/knet_R18_tiny_16k_bf16_keep_freed.yaml \
    --output output/imgprop_$name --baselines $B MODEL.KNET.IMAGE_PROPOSALS $n "$@" \
    > output/imgprop_$name.log 2>&1
  echo "$(date -u +%H:%M:%S) end $name rc=$?"
}
value() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['value'])" "$1"; }
run IP20 panoptic 20
run IP10 panoptic 10
a=$(value output/imgprop_IP20/benchmark_summary.json)
b=$(value output/imgprop_IP10/benchmark_summary.json)
N=$(python3 -c "print(10 if $b > $a else 20)")
echo "IP20 $a, IP10 $b: N $N for IPS2 and IPI"
run IPS2 panoptic $N SEED 2
run IPI instance $N
