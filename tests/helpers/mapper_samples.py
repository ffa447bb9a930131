"""Dataset dicts of the three tasks for the K-Net mappers, and the model-input contract.

The real COCO panoptic / instance and ADE20K semantic configs, contiguous ids of COCO panoptic;
and the hand-built data of the mapper tests (tests/data/test_*_mapper.py): a 20x30 panoptic
map with its segments, a config with their class layout, image and PNG writers, output checks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.structures import BitMasks, BoxMode
from panopticapi.utils import id2rgb
from PIL import Image

from knet_d2 import add_knet_config
from knet_d2.data.dataset_mappers import (
    KNetInstanceDatasetMapper,
    KNetPanopticDatasetMapper,
    KNetSemanticDatasetMapper,
)
from tests.helpers.image_files import square_ids

CONFIGS = {
    "panoptic": "configs/coco/panoptic-segmentation/knet_R50_1x.yaml",
    "instance": "configs/coco/instance-segmentation/knet_R50_1x.yaml",
    "semantic": "configs/ade20k/semantic-segmentation/knet_fcn_R50_512x512_80k.yaml",
}
TASKS = tuple(CONFIGS)
THING, STUFF = 0, 80  # COCO panoptic contiguous ids: things 0..79, stuff 80..132
IGNORE = 255


def sample(tmp_path: Path, task: str, image_file: Path, hw: Tuple[int, int], **extra) -> dict:
    """A dataset dict of ``task`` for ``image_file`` whose annotation is (H, W) = ``hw``."""
    h, w = hw
    d = {"file_name": str(image_file), "height": h, "width": w, "image_id": 7}
    stem = Path(image_file).stem
    if task == "panoptic":
        pan = tmp_path / f"{stem}_pan.png"
        Image.fromarray(id2rgb(square_ids(h, w)).astype(np.uint8)).save(pan)
        d["pan_seg_file_name"] = str(pan)
        d["segments_info"] = [
            {"id": 1, "category_id": THING, "isthing": True, "iscrowd": 0},
            {"id": 2, "category_id": STUFF, "isthing": False, "iscrowd": 0},
        ]
    elif task == "instance":
        x, y = w / 2, h / 2
        d["annotations"] = [{
            "category_id": THING, "iscrowd": 0, "bbox": [0, 0, x, y],
            "bbox_mode": BoxMode.XYWH_ABS, "segmentation": [[0, 0, x, 0, x, y, 0, y]],
        }]
    else:
        sem = tmp_path / f"{stem}_sem.png"
        lab = np.ones((h, w), np.uint8)
        lab[: h // 2, : w // 2] = 0
        Image.fromarray(lab).save(sem)
        d["sem_seg_file_name"] = str(sem)
    d.update(extra)
    return d


def check_valid(out: dict, task: str) -> Tuple[int, int]:
    """Assert the model-input contract; returns the output (H, W)."""
    img = out["image"]
    assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3
    h, w = img.shape[1:]
    if task in ("panoptic", "instance"):
        inst = out["instances"]
        assert inst.image_size == (h, w)
        assert isinstance(inst.gt_masks, BitMasks)
        masks = inst.gt_masks.tensor
        assert masks.dtype == torch.bool and tuple(masks.shape) == (len(inst), h, w)
        assert masks.flatten(1).any(1).all()  # no empty target
        ncls = 133 if task == "panoptic" else 80
        assert ((inst.gt_classes >= 0) & (inst.gt_classes < ncls)).all()
    if task in ("panoptic", "semantic"):
        sem = out["sem_seg"]
        assert sem.dtype == torch.int64 and tuple(sem.shape) == (h, w)
        ncls = 133 if task == "panoptic" else 150
        assert (((sem >= 0) & (sem < ncls)) | (sem == IGNORE)).all()
    return h, w


def identity_instance_mapper() -> KNetInstanceDatasetMapper:
    return KNetInstanceDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", num_thing_classes=80
    )


def identity_panoptic_mapper() -> KNetPanopticDatasetMapper:
    return KNetPanopticDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", num_thing_classes=80,
        num_stuff_classes=53,
    )


def identity_semantic_mapper(num_classes: int = 150) -> KNetSemanticDatasetMapper:
    return KNetSemanticDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", num_classes=num_classes
    )


# ------------------------------------------------------- hand-built data of the mapper tests
NT, NS = 3, 2  # class layout of the hand-built data: things 0..2, stuff 3..4


def make_cfg(mapper: str = "knet_panoptic", **input_opts):
    cfg = get_cfg()
    add_knet_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.MODEL.KNET.NUM_THING_CLASSES = NT
    cfg.MODEL.KNET.NUM_STUFF_CLASSES = NS
    cfg.INPUT.FORMAT = "RGB"  # as in configs/coco/Base-KNet-R50.yaml
    for k, v in input_opts.items():
        setattr(cfg.INPUT, k, v)
    return cfg


def write_image(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)  # PNG: lossless, so pixels can be compared exactly
    return img


def write_pan(path: Path, ids: np.ndarray) -> None:
    Image.fromarray(id2rgb(ids).astype(np.uint8)).save(path)


# A 20x30 panoptic map. Things: 5 (cat 1), 7 (cat 0), 9 (cat 2, crowd). Stuff: 11 and 12 share
# stuff class 4 (to be merged), 13 is class 3. 0 = void, 99 = unlisted (also void).
H, W = 20, 30
SEGMENTS = [
    {"id": 5, "category_id": 1, "isthing": True, "iscrowd": 0},
    {"id": 7, "category_id": 0, "isthing": True, "iscrowd": 0},
    {"id": 9, "category_id": 2, "isthing": True, "iscrowd": 1},
    {"id": 11, "category_id": 4, "isthing": False, "iscrowd": 0},
    {"id": 12, "category_id": 4, "isthing": False, "iscrowd": 0},
    {"id": 13, "category_id": 3, "isthing": False, "iscrowd": 0},
]


def fake_ids() -> np.ndarray:
    ids = np.zeros((H, W), np.int64)
    ids[:10, :10] = 11
    ids[10:, :10] = 13
    ids[:, 10:20] = 12
    ids[2:6, 2:8] = 5      # thing on top of stuff 11, left side only
    ids[12:18, 22:28] = 7  # right side only
    ids[0:4, 24:30] = 9    # crowd
    ids[15:20, 12:14] = 99  # unlisted id -> void
    return ids          # the rest of columns 20..29 stays 0 (void)


def check_output_types(out: dict, h: int, w: int) -> None:
    inst = out["instances"]
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, h, w)
    assert inst.image_size == (h, w)
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.ndim == 1
    assert isinstance(inst.gt_masks, BitMasks)
    assert inst.gt_masks.tensor.dtype == torch.bool
    assert tuple(inst.gt_masks.tensor.shape) == (len(inst), h, w)
    assert tuple(inst.gt_boxes.tensor.shape) == (len(inst), 4)
    if "sem_seg" in out:
        assert out["sem_seg"].dtype == torch.int64 and tuple(out["sem_seg"].shape) == (h, w)
