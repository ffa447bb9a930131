#!/usr/bin/env python
"""Make COCO semantic labels over all 133 panoptic categories from the panoptic annotations.

Reads  $DETECTRON2_DATASETS/coco/annotations/panoptic_{train,val}2017.json and
       $DETECTRON2_DATASETS/coco/panoptic_{train,val}2017/*.png
writes $DETECTRON2_DATASETS/coco/panoptic_semseg_{train,val}2017/*.png (L mode, contiguous ids
0..132 in D2's COCO_CATEGORIES order = 80 things then 53 stuff, 255 = unlabeled), used by
``knet_coco_2017_{train,val}_panoptic_with_sem_seg``. DETECTRON2_DATASETS defaults to ./datasets.
Needs knet_d2 importable (``pip install -e .``).
"""

import os
import time
from pathlib import Path

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from knet_d2.data.datasets.coco_panoptic_semseg import convert_panoptic_to_semantic


def main() -> None:
    coco = Path(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))) / "coco"
    for split in ("val2017", "train2017"):
        start = time.time()
        n = convert_panoptic_to_semantic(
            coco / "annotations" / f"panoptic_{split}.json",
            coco / f"panoptic_{split}",
            coco / f"panoptic_semseg_{split}",
            categories=COCO_CATEGORIES,
        )
        print(f"{split}: wrote {n} semantic PNGs in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
