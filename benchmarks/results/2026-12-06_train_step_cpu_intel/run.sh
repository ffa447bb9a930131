#!/bin/bash
# plan.txt: the training-step benchmark of the earlier sections, on the Intel VM at today's code.
cd "$(dirname "$0")/../../.."
R=benchmarks/results/2026-12-06_train_step_cpu_intel
echo "$(date -u +%H:%M:%S) start"
KNET_BENCH_DATA=../shared/data PYTHONPATH=. /usr/bin/time -v -o $R/time.txt .venv/bin/python \
  -m benchmarks.bench_train --device cpu --threads 2 --warmup 1 --iters 3 --amp none bf16 \
  --data-root ../shared/data --json $R/bench_train_cpu.json > $R/stdout.txt 2>&1
echo "$(date -u +%H:%M:%S) end rc=$?"
