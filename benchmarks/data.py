"""The benchmarks' real COCO inputs, resized like D2's test / train resize.

* inference: the ``coco_tiny`` val2017 images (:func:`coco_tiny_inputs`), copied into each
  model's channel order and device by :func:`inputs_for`;
* training: the ``coco_panoptic_sample`` images with their panoptic annotations mapped by
  K-Net's training mapper (:func:`panoptic_batch`), and the same arrays in the layout of D2's
  Mask R-CNN / PanopticFPN training inputs (:func:`d2_batch`).

``data_root`` is the folder holding ``coco_tiny/`` and ``coco_panoptic_sample/`` (see
:func:`.cli.default_data_root`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch

from .models import input_format, knet_cfg, to_format

#: COCO panoptic thing classes (contiguous ids 0..79, stuff after them)
NUM_THINGS = 80


def resize_shortest_edge(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """D2's test-time ``ResizeShortestEdge(min_size, max_size)`` of an (H, W, 3) uint8 array."""
    from detectron2.data import transforms as T

    return T.ResizeShortestEdge(min_size, max_size).get_transform(image).apply_image(image)


def coco_tiny_inputs(data_root: Path, num_images: int, min_size: int, max_size: int
                     ) -> List[dict]:
    """The first ``num_images`` val2017 images of coco_tiny (sorted by name), as RGB inputs.

    Returns:
        dicts with ``image`` (3, h, w) uint8 RGB (resized), ``height`` / ``width`` (original
        size, the size the models return their outputs at) and ``file_name``.
    """
    from detectron2.data import detection_utils as utils

    folder = data_root / "coco_tiny" / "val2017"
    files = sorted(folder.glob("*.jpg"))[:num_images]
    if len(files) < num_images:
        raise SystemExit(f"{folder}: only {len(files)} images, --num-images {num_images}")
    out = []
    for f in files:
        img = utils.read_image(str(f), format="RGB")
        resized = resize_shortest_edge(img, min_size, max_size)
        out.append({
            "image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
            "height": img.shape[0],
            "width": img.shape[1],
            "file_name": str(f),
        })
    return out


def inputs_for(model_key: str, inputs: List[dict], device: torch.device,
               channels_last: bool = False) -> List[dict]:
    """Copies of ``inputs`` in the model's channel order, already on ``device``."""
    fmt = input_format(model_key)
    out = []
    for x in inputs:
        img = to_format(x["image"], fmt).to(device)
        if channels_last:
            img = img[None].contiguous(memory_format=torch.channels_last)[0]
        out.append({**x, "image": img})
    return out


def panoptic_batch(data_root: Path, batch_size: int, min_size: int, max_size: int
                   ) -> List[dict]:
    """K-Net training inputs of the coco_panoptic_sample images (RGB, things first)."""
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
    from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

    from knet_d2.data.dataset_mappers import build_knet_train_mapper

    root = data_root / "coco_panoptic_sample"
    dicts = load_coco_panoptic_json(
        str(root / "panoptic_examples.json"), str(root / "input_images"),
        str(root / "panoptic_examples"), _get_builtin_metadata("coco_panoptic_standard"),
    )
    cfg = knet_cfg("knet_panoptic", "cpu", [
        "INPUT.MIN_SIZE_TRAIN", f"({min_size},)", "INPUT.MAX_SIZE_TRAIN", str(max_size),
        "INPUT.RANDOM_FLIP", "none",
    ])
    mapper = build_knet_train_mapper(cfg)
    return [mapper(dicts[i % len(dicts)]) for i in range(batch_size)]


def d2_batch(batch: List[dict], key: str) -> List[dict]:
    """The K-Net batch in the format of D2's Mask R-CNN / PanopticFPN training inputs."""
    from detectron2.structures import Instances

    out = []
    for x in batch:
        inst = x["instances"]
        things = inst.gt_classes < NUM_THINGS
        d2_inst = Instances(inst.image_size)
        d2_inst.gt_boxes = inst.gt_boxes[things]
        d2_inst.gt_classes = inst.gt_classes[things]
        d2_inst.gt_masks = inst.gt_masks[things]
        y = {k: v for k, v in x.items() if k not in ("instances", "sem_seg")}
        y["image"] = to_format(x["image"], "BGR")
        y["instances"] = d2_inst
        if key == "panoptic_fpn":
            sem = x["sem_seg"]
            y["sem_seg"] = torch.where(
                sem == 255, sem, torch.where(sem < NUM_THINGS, 0, sem - NUM_THINGS + 1)
            )
        out.append(y)
    return out
