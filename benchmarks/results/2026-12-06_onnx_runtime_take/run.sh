#!/bin/bash
# plan.txt: bench_onnx_runtime A B A B at 468715e (B: --keep-freed-host-memory).
cd "$(dirname "$0")/../../.."
export KNET_BENCH_DATA=../shared/data  # the first start (03:04 UTC) lacked it and stopped at once: data not found
R=benchmarks/results/2026-12-06_onnx_runtime_take
for run in a1 b1 a2 b2; do
  flag=""; [ "${run:0:1}" = b ] && flag="--keep-freed-host-memory"
  echo "$(date -u +%H:%M:%S) start $run"
  /usr/bin/time -v -o $R/$run.time.txt .venv/bin/python -m benchmarks.bench_onnx_runtime \
    --threads 2 --num-images 4 --iters 2 $flag --json $R/$run.json \
    > $R/$run.stdout.txt 2> $R/$run.stderr.txt
  echo "$(date -u +%H:%M:%S) end $run rc=$?"
done
