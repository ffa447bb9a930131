#!/bin/bash
# plan.txt: make test, then the instance quickstart, in a fresh clone of the development checkout.
set -u
SRC=/work/main
R=$SRC/benchmarks/results/2026-12-06_quickstart_instance_stride4_alpha
d=$(mktemp -d) && git clone -q $SRC $d/k && ln -s $(realpath $SRC/../shared) $d/shared && cd $d/k
echo "clone: $d/k at $(git rev-parse --short HEAD)"
echo "$(date -u +%H:%M:%S) make test"
make test > /tmp/qs_make_test.log 2>&1; echo "$(date -u +%H:%M:%S) make test rc=$?"
echo "$(date -u +%H:%M:%S) quickstart"
DETECTRON2_DATASETS=$SRC/output/d2data /usr/bin/time -v -o /tmp/qs_time.txt make quickstart \
  QS_OUT=output/qs QS_FLAGS="--tasks instance" > /tmp/qs_run.log 2>&1
echo "$(date -u +%H:%M:%S) quickstart rc=$?"
echo "$d" > /tmp/qs_clone_dir.txt
