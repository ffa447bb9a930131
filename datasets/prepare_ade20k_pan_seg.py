#!/usr/bin/env python
"""Build ADE20K panoptic ground truth (100 things + 50 stuff) in Detectron2's layout.

Reads  $DETECTRON2_DATASETS/ADEChallengeData2016/images/{training,validation}/*.jpg
       $DETECTRON2_DATASETS/ADEChallengeData2016/annotations/{training,validation}/*.png
       $DETECTRON2_DATASETS/ADEChallengeData2016/annotations_instance/{training,validation}/*.png
writes $DETECTRON2_DATASETS/ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png and
       $DETECTRON2_DATASETS/ADEChallengeData2016/ade20k_panoptic_{train,val}.json
for knet_d2's ``knet_ade20k_panoptic_{train,val}`` (format and id conventions:
knet_d2/data/datasets/ade20k_panoptic.py). DETECTRON2_DATASETS defaults to ./datasets.
An existing JSON is never overwritten. Needs knet_d2 importable (``pip install -e .``).
"""

import os
from pathlib import Path

from knet_d2.data.datasets.ade20k_panoptic import convert_ade20k_panoptic_split


def main() -> None:
    root = Path(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
    ade = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        n = convert_ade20k_panoptic_split(ade, split)
        print(f"{split}: converted {n} images")


if __name__ == "__main__":
    main()
