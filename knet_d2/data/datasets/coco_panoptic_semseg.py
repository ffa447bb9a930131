"""COCO panoptic annotations -> semantic label PNGs over all categories.

Every pixel of a segment gets the contiguous id of its category (things first, then stuff,
each in dataset-id order: 0..132 for COCO's 80 + 53 categories); pixels of no listed segment
get 255. Crowd segments keep their category. This is the Mask2Former ``panoptic_semseg``
format, *not* D2's PanopticFPN ``panoptic_stuff`` format (things merged into 0).
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from .register_custom import contiguous_id_map

__all__ = ["panoptic_to_semantic", "convert_panoptic_to_semantic"]


def panoptic_to_semantic(
    pan_png: str | os.PathLike,
    segments_info: Sequence[dict],
    id_map: dict[int, int],
    out_png: str | os.PathLike,
    ignore_label: int = 255,
) -> None:
    """Convert one panoptic PNG into a semantic PNG (L mode).

    Args:
        pan_png: RGB-encoded panoptic PNG.
        segments_info: the image's segments (``id``, dataset ``category_id``).
        id_map: dataset category id -> contiguous id.
        out_png: output path (parent directories are created).
        ignore_label: value of pixels that belong to no listed segment.
    """
    if not os.path.isfile(pan_png):
        raise FileNotFoundError(f"panoptic PNG not found: {pan_png}")
    with Image.open(pan_png) as img:
        if img.mode != "RGB":
            raise ValueError(f"{pan_png}: expected an RGB panoptic PNG, got mode {img.mode}")
        ids = rgb2id(np.asarray(img, dtype=np.uint32))
    sem = np.full(ids.shape, ignore_label, np.uint8)
    for seg in segments_info:
        cat = seg["category_id"]
        if cat not in id_map:
            raise ValueError(f"{pan_png}: segment {seg['id']} has unknown category_id {cat}")
        sem[ids == seg["id"]] = id_map[cat]
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sem).save(out_png)


def _convert_one(ann: dict, panoptic_root: str, sem_seg_root: str, id_map: dict) -> None:
    panoptic_to_semantic(
        os.path.join(panoptic_root, ann["file_name"]),
        ann["segments_info"],
        id_map,
        os.path.join(sem_seg_root, ann["file_name"]),
    )


def convert_panoptic_to_semantic(
    panoptic_json: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    sem_seg_root: str | os.PathLike,
    categories: Sequence[dict] | None = None,
    num_workers: int | None = None,
) -> int:
    """Convert all images of a COCO panoptic JSON; returns the number of PNGs written.

    Args:
        panoptic_json: COCO panoptic JSON.
        panoptic_root: directory of its PNGs.
        sem_seg_root: output directory (created).
        categories: categories defining the contiguous ids (default: the JSON's own).
        num_workers: worker processes (default: CPU count; <= 1 runs in this process).
    """
    if not os.path.isfile(panoptic_json):
        raise FileNotFoundError(f"panoptic JSON not found: {panoptic_json}")
    if not os.path.isdir(panoptic_root):
        raise FileNotFoundError(f"panoptic PNG directory not found: {panoptic_root}")
    with open(panoptic_json) as f:
        data = json.load(f)
    if "annotations" not in data:
        raise ValueError(f"{panoptic_json}: no 'annotations' list")
    if categories is None:
        if "categories" not in data:
            raise ValueError(f"{panoptic_json}: no 'categories' list")
        categories = data["categories"]
    id_map = contiguous_id_map(categories)
    os.makedirs(sem_seg_root, exist_ok=True)
    fn = functools.partial(
        _convert_one, panoptic_root=str(panoptic_root), sem_seg_root=str(sem_seg_root),
        id_map=id_map,
    )
    anns = data["annotations"]
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(anns) <= 1:
        for ann in anns:
            fn(ann)
    else:
        with mp.Pool(processes=workers) as pool:
            for _ in pool.imap_unordered(fn, anns, chunksize=16):
                pass
    return len(anns)
