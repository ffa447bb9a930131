#!/bin/bash
# plan.txt: N1, R1, N2, R2 (semantic 10-minute recipe, without / with its extra augmentations).
cd "$(dirname "$0")/../../.."
export DETECTRON2_DATASETS=output/d2data
B=benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json
C=configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml
NOAUG="INPUT.COLOR_AUG_SSD False MODEL.KNET.SEM.TRAIN_RESIZE_RATIO_RANGE []"
for spec in "N1 1 noaug" "R1 1 -" "N2 2 noaug" "R2 2 -"; do
  set -- $spec
  extra="SEED $2"; [ "$3" = "noaug" ] && extra="$extra $NOAUG"
  echo "$(date -u +%H:%M:%S) start $1"
  /usr/bin/time -v -o output/semaug_$1.time.txt .venv/bin/python -m benchmarks.train_synthetic \
    --task semantic --config-file $C \
    --output output/semaug_$1 --baselines $B $extra > output/semaug_$1.log 2>&1
  echo "$(date -u +%H:%M:%S) end $1 rc=$?"
done
