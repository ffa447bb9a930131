#!/bin/bash
# plan.txt: paired whole-process timing, A = the GroupNorm hooks (worktree at the commit named
# in plan.txt), B = main without them; A B A B ..., the first pair a warm-up. Wall seconds per
# run in walls.txt.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_amd_baseline/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=/work/main/output/d2data
D=$PWD/benchmarks/results/2026-12-06_group_norm_nchw
rm -f output/step_gnA.log output/step_gnB.log $D/walls.txt
echo "$(date -u +%H:%M:%S) start"
for pair in 0 1 2 3; do
  /usr/bin/time -f "A $pair %e" -a -o $D/walls.txt bash $D/step.sh /tmp/wt gnA
  /usr/bin/time -f "B $pair %e" -a -o $D/walls.txt bash $D/step.sh /work/main gnB
done
echo "$(date -u +%H:%M:%S) end"
python3 - "$D/walls.txt" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
a = {int(p): float(s) for k, p, s in rows if k == "A" and p != "0"}
b = {int(p): float(s) for k, p, s in rows if k == "B" and p != "0"}
ratios = [b[p] / a[p] for p in sorted(a)]
print(f"A (GroupNorm hooks) wall s: {sorted(a.values())}, median {statistics.median(a.values()):.2f}")
print(f"B (main)            wall s: {sorted(b.values())}, median {statistics.median(b.values()):.2f}")
print(f"B/A per pair (speed-up): {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")
PY
grep -h "knet_d2 from" output/step_gnA.log output/step_gnB.log | sort | uniq -c
grep -h "iter: 399 " output/step_gnA.log | sed 's/.*  time: \([0-9.]*\).*/A iteration time \1/'
grep -h "iter: 399 " output/step_gnB.log | sed 's/.*  time: \([0-9.]*\).*/B iteration time \1/'
