#!/bin/bash
# plan.txt: paired whole-process timing, A = the recipe (THING_SOFTMAX True), B = the same with
# THING_SOFTMAX False; A B A B ..., the first pair a warm-up. Wall seconds per run in walls.txt.
cd "$(dirname "$0")/../../.."
while pgrep -f "2026-12-06_panoptic_softmax_two_budgets/run.sh" > /dev/null; do sleep 10; done
export DETECTRON2_DATASETS=output/d2data
D=benchmarks/results/2026-12-06_thing_softmax_step_time
rm -f output/step_A.log output/step_B.log $D/walls.txt
echo "$(date -u +%H:%M:%S) start"
for pair in 0 1 2 3; do
  /usr/bin/time -f "A $pair %e" -a -o $D/walls.txt bash $D/step.sh A
  /usr/bin/time -f "B $pair %e" -a -o $D/walls.txt bash $D/step.sh B MODEL.KNET.THING_SOFTMAX False
done
echo "$(date -u +%H:%M:%S) end"
python3 - "$D/walls.txt" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
a = {int(p): float(s) for k, p, s in rows if k == "A" and p != "0"}
b = {int(p): float(s) for k, p, s in rows if k == "B" and p != "0"}
ratios = [a[p] / b[p] for p in sorted(a)]
print(f"A (softmax) wall s: {sorted(a.values())}, median {statistics.median(a.values()):.2f}")
print(f"B (focal)   wall s: {sorted(b.values())}, median {statistics.median(b.values()):.2f}")
print(f"A/B per pair: {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")
PY
grep -h "iter: 149 " output/step_A.log | sed 's/.*  time: \([0-9.]*\).*/A iteration time \1/'
grep -h "iter: 149 " output/step_B.log | sed 's/.*  time: \([0-9.]*\).*/B iteration time \1/'
