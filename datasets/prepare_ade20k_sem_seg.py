#!/usr/bin/env python
"""Convert ADE20K SceneParsing labels to the Detectron2 convention.

Reads  $DETECTRON2_DATASETS/ADEChallengeData2016/annotations/{training,validation}/*.png
writes $DETECTRON2_DATASETS/ADEChallengeData2016/annotations_detectron2/{training,validation}/
with label - 1 (0 "other" -> 255 ignore, classes 1..150 -> 0..149), as D2's
``ade20k_sem_seg_{train,val}`` expect. DETECTRON2_DATASETS defaults to ./datasets.
Needs knet_d2 importable (``pip install -e .``).
"""

import os
from pathlib import Path

from knet_d2.data.datasets.ade20k import convert_ade20k_split


def main() -> None:
    root = Path(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
    ade = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        src, dst = ade / "annotations" / split, ade / "annotations_detectron2" / split
        n = convert_ade20k_split(src, dst)
        print(f"{split}: converted {n} label files")


if __name__ == "__main__":
    main()
