#!/bin/bash
# plan.txt: the three-task quickstart in a fresh clone of the development checkout.
set -u
SRC=/work/main
d=$(mktemp -d) && git clone -q $SRC $d/k && ln -s $(realpath $SRC/../shared) $d/shared && cd $d/k
echo "clone: $d/k at $(git rev-parse --short HEAD)"
echo "$d" > /tmp/qs_clone_dir.txt
echo "$(date -u +%H:%M:%S) quickstart"
DETECTRON2_DATASETS=$SRC/output/d2data /usr/bin/time -v -o /tmp/qs_time.txt make quickstart \
  QS_OUT=output/qs > /tmp/qs_run.log 2>&1
echo "$(date -u +%H:%M:%S) quickstart rc=$?"
