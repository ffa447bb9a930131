"""Register ``knet_ade20k_panoptic_{train,val}``: ADE20K panoptic (100 things + 50 stuff).

Detectron2 has no ADE20K panoptic names; these follow its layout under
``$DETECTRON2_DATASETS`` (default ``datasets``)::

    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png      # datasets/prepare_ade20k_pan_seg.py
    ADEChallengeData2016/ade20k_panoptic_{train,val}.json
    ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
                                                                # datasets/prepare_ade20k_sem_seg.py

Every dict also gets ``sem_seg_file_name`` (the D2 semantic PNGs of ``ade20k_sem_seg_*``), so
one panoptic model is scored for PQ (COCOPanopticEvaluator) and mIoU (SemSegEvaluator).
Category ids are the 150 SceneParsing classes in their own order
(:mod:`knet_d2.data.datasets.ade20k_panoptic`). Registering touches no file.
"""
from __future__ import annotations

import os

from detectron2.data import DatasetCatalog

from .ade20k_panoptic import ade20k_panoptic_metadata
from .register_custom import register_panoptic_from_metadata

__all__ = ["register_all_ade20k_panoptic"]

_SPLITS = {
    # name: (images, panoptic PNGs, panoptic JSON, semantic PNGs), below ADEChallengeData2016/
    "knet_ade20k_panoptic_train": (
        "images/training",
        "ade20k_panoptic_train",
        "ade20k_panoptic_train.json",
        "annotations_detectron2/training",
    ),
    "knet_ade20k_panoptic_val": (
        "images/validation",
        "ade20k_panoptic_val",
        "ade20k_panoptic_val.json",
        "annotations_detectron2/validation",
    ),
}


def register_all_ade20k_panoptic(root: str | os.PathLike) -> list[str]:
    """Register the two names with files below ``root``/ADEChallengeData2016 (names already
    registered are left alone). Returns the names registered here."""
    ade = os.path.join(root, "ADEChallengeData2016")
    metadata = ade20k_panoptic_metadata()
    done = []
    for name, rel in _SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        image_root, pan_root, pan_json, sem_root = (os.path.join(ade, r) for r in rel)
        register_panoptic_from_metadata(
            name, metadata, image_root, pan_root, pan_json, sem_seg_root=sem_root
        )
        done.append(name)
    return done


register_all_ade20k_panoptic(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
