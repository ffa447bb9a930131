#!/bin/bash
# same_losses.py in a worktree at 6231471 (before this afternoon's model code) and in the
# development checkout; DETECTRON2_DATASETS as for the runs.
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=$PWD/output/d2data
S=$PWD/benchmarks/results/2026-12-06_quickstart_panoptic_instance_f90549e/same_losses.py
OUT=$PWD/benchmarks/results/2026-12-06_quickstart_panoptic_instance_f90549e/same_losses.json
git worktree add -q /tmp/same_losses_old 6231471
(cd /tmp/same_losses_old && $OLDPWD/.venv/bin/python $S 2>/dev/null | tail -1) > /tmp/old.json
.venv/bin/python $S 2>/dev/null | tail -1 > /tmp/new.json
git worktree remove --force /tmp/same_losses_old
python3 -c "
import json; a=json.load(open('/tmp/old.json')); b=json.load(open('/tmp/new.json'))
json.dump({'date': '$(date -u +%Y-%m-%dT%H:%M:%S)', 'runs': [a, b], 'equal': a['losses'] == b['losses']}, open('$OUT', 'w'), indent=1)"
cat $OUT
