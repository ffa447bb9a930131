"""Register ``knet_coco_2017_{train,val}_panoptic_with_sem_seg``.

The names carry the ``knet_`` prefix so that knet_d2 can be imported together with other
Detectron2 projects (Mask2Former registers the same data as ``coco_2017_*_panoptic_with_sem_seg``;
D2's catalogs refuse a second registration of a name).

COCO panoptic with, in addition, ``sem_seg_file_name`` in every dict pointing at
``coco/panoptic_semseg_{train,val}2017/*.png``: all 133 categories with contiguous ids 0..132
(80 things, then 53 stuff, each in id order), 255 = unlabeled. Those PNGs are made by
``datasets/prepare_coco_semantic_annos_from_panoptic_annos.py``; with them a COCO panoptic
model can also be evaluated with SemSegEvaluator. Registering touches no file.

Expected files under ``$DETECTRON2_DATASETS`` (default ``datasets``)::

    coco/{train,val}2017/*.jpg
    coco/panoptic_{train,val}2017/*.png
    coco/panoptic_semseg_{train,val}2017/*.png
    coco/annotations/panoptic_{train,val}2017.json
    coco/annotations/instances_{train,val}2017.json
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .register_custom import metadata_from_categories, register_panoptic_from_metadata

__all__ = ["register_all_coco_panoptic_with_sem_seg"]

_SPLITS = {
    # name: (images, panoptic PNGs, panoptic JSON, semantic PNGs, instance JSON)
    "knet_coco_2017_train_panoptic_with_sem_seg": (
        "coco/train2017",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
        "coco/annotations/instances_train2017.json",
    ),
    "knet_coco_2017_val_panoptic_with_sem_seg": (
        "coco/val2017",
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
        "coco/annotations/instances_val2017.json",
    ),
}


def register_all_coco_panoptic_with_sem_seg(root: str | os.PathLike) -> list[str]:
    """Register the two names below ``root``; names already registered (a second call) are
    left alone. Returns the names registered here."""
    metadata = metadata_from_categories(COCO_CATEGORIES)
    done = []
    for name, rel in _SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        image_root, pan_root, pan_json, sem_root, ins_json = (os.path.join(root, r) for r in rel)
        register_panoptic_from_metadata(
            name, metadata, image_root, pan_root, pan_json,
            sem_seg_root=sem_root, instances_json=ins_json,
        )
        done.append(name)
    return done


register_all_coco_panoptic_with_sem_seg(
    os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
)
