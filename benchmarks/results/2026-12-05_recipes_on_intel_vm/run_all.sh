#!/bin/bash
# The two runs of plan.txt, started when the kernel-stages runs have ended.
cd /work/main
while pgrep -f 2026-12-05_kernel_stages/run_all.sh > /dev/null; do sleep 15; done
export DETECTRON2_DATASETS=output/d2data
mkdir -p output/intel
B=benchmarks/results/2026-12-04_quickstart_v2/baselines.json
run() { name=$1; shift; echo "$(date -u +%H:%M:%S) start $name"; /usr/bin/time -v -o output/intel/$name.time.txt .venv/bin/python -m benchmarks.train_synthetic "$@" > output/intel/$name.log 2>&1; echo "$(date -u +%H:%M:%S) end $name rc=$?"; }
run semantic --task semantic --config-file configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml --output output/intel/semantic --baselines $B
run panoptic --task panoptic --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml --output output/intel/panoptic --baselines $B
