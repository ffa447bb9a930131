"""ADE20K panoptic (150 classes: 100 things, 50 stuff) from ADEChallengeData2016.

The panoptic ground truth combines two releases of the same 20k/2k images:

* ``annotations/*.png`` (SceneParsing, L mode): 0 = other, ``1..150`` = classes; the stuff
  segments are its stuff-class regions (one segment per class and image);
* ``annotations_instance/*.png`` (the instance-segmentation release, RGB): R = instance
  category ``1..100`` (0 = none), G = instance id (0 = none); the thing segments are its
  instances. Instance category ``k`` is the k-th thing class in SceneParsing order
  (:data:`ADE20K_THING_IDS`). Thing-class pixels without an instance are void.

Categories keep the SceneParsing order: contiguous id = ``SceneParsing id - 1`` (0..149), the
ids of D2's ``ade20k_sem_seg_*`` and of ``annotations_detectron2`` (so a panoptic model is
also scored for mIoU on those PNGs). The model reorders things first internally
(:class:`~knet_d2.data.class_layout.ClassLayout`).

Output (COCO panoptic format): ``ade20k_panoptic_{train,val}/<image id>.png`` with segment id
= ``(contiguous id + 1) * 1000 + k`` (k = 0 for stuff, the instance id for things) and
``ade20k_panoptic_{train,val}.json`` with ``images``, ``annotations`` and ``categories``;
image ids are the number in the file name (``ADE_val_00000001`` -> 1), as D2's loader needs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES
from PIL import Image

__all__ = [
    "ADE20K_THING_IDS",
    "ade20k_panoptic_categories",
    "ade20k_panoptic_metadata",
    "convert_ade20k_panoptic_image",
    "convert_ade20k_panoptic_split",
]

#: SceneParsing ids (1-based) of the 100 thing classes, in order: instance category k
#: (R channel of ``annotations_instance``) is ``ADE20K_THING_IDS[k - 1]``.
ADE20K_THING_IDS = (
    8, 9, 11, 13, 15, 16, 19, 20, 21, 23, 24, 25, 28, 31, 32, 33, 34, 36, 37, 38,
    39, 40, 42, 43, 44, 45, 46, 48, 50, 51, 54, 56, 57, 58, 59, 63, 65, 66, 67, 68,
    70, 71, 72, 73, 74, 75, 76, 77, 79, 81, 82, 83, 84, 86, 87, 88, 89, 90, 91, 93,
    94, 96, 98, 99, 103, 104, 105, 108, 109, 111, 112, 113, 116, 117, 119, 120, 121, 122, 124,
    125, 126, 127, 128, 130, 131, 133, 134, 135, 136, 137, 138, 139, 140, 143, 144, 145, 147,
    148, 149, 150,
)  # fmt: skip

_LABEL_DIVISOR = 1000


def ade20k_panoptic_categories() -> list[dict]:
    """COCO-panoptic categories: ``id`` 0..149 (SceneParsing order), ``name``, ``isthing``."""
    things = {i - 1 for i in ADE20K_THING_IDS}
    return [
        {"id": i, "name": name, "isthing": int(i in things)}
        for i, name in enumerate(ADE20K_SEM_SEG_CATEGORIES)
    ]


def ade20k_panoptic_metadata() -> dict:
    """D2 metadata in SceneParsing order (contiguous id = category id): ``thing_classes`` and
    ``stuff_classes`` both list all 150 names (index = contiguous id, as D2's Cityscapes
    panoptic metadata); ``thing_dataset_id_to_contiguous_id`` holds the 100 things and
    ``stuff_dataset_id_to_contiguous_id`` all 150 classes (SemSegEvaluator's class map, the
    knet_d2 convention of :func:`~.register_custom.metadata_from_categories`)."""
    from detectron2.utils.colormap import colormap

    cats = ade20k_panoptic_categories()
    names = [c["name"] for c in cats]
    palette = colormap(rgb=True, maximum=255)
    colors = [[int(v) for v in palette[i % len(palette)]] for i in range(len(cats))]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": names,
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {c["id"]: c["id"] for c in cats if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["id"] for c in cats},
    }


def _read_png(path: Path, modes: tuple, what: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"ADE20K {what} not found: {path}")
    with Image.open(path) as img:
        if img.mode not in modes:
            raise ValueError(f"{path}: {what} must have mode {' or '.join(modes)}, got {img.mode}")
        return np.asarray(img)


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def convert_ade20k_panoptic_image(
    semantic_png: str | os.PathLike, instance_png: str | os.PathLike, out_png: str | os.PathLike
) -> list[dict]:
    """Write one panoptic PNG; return its ``segments_info`` (``id``, ``category_id``,
    ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0), stuff first, areas of the final PNG.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file for a missing file, a wrong
    image mode, different sizes, a class value out of range or an instance with two classes.
    """
    semantic_png, instance_png = Path(semantic_png), Path(instance_png)
    sem = _read_png(semantic_png, ("L",), "semantic label PNG").astype(np.int64)
    ins = _read_png(instance_png, ("RGB",), "instance PNG").astype(np.int64)
    if sem.shape != ins.shape[:2]:
        raise ValueError(
            f"{instance_png}: size {ins.shape[:2]} (h, w) differs from {semantic_png} {sem.shape}"
        )
    if sem.max(initial=0) > len(ADE20K_SEM_SEG_CATEGORIES):
        raise ValueError(f"{semantic_png}: label {sem.max()} > {len(ADE20K_SEM_SEG_CATEGORIES)}")
    if ins[..., 0].max(initial=0) > len(ADE20K_THING_IDS):
        raise ValueError(
            f"{instance_png}: instance category {ins[..., 0].max()} > {len(ADE20K_THING_IDS)}"
        )
    things = {i - 1 for i in ADE20K_THING_IDS}
    ids = np.zeros(sem.shape, dtype=np.int64)
    order = []  # (segment id, contiguous category id)
    for label in np.unique(sem):
        if label == 0 or (label - 1) in things:
            continue
        ids[sem == label] = label * _LABEL_DIVISOR
        order.append((int(label * _LABEL_DIVISOR), int(label - 1)))
    for inst in np.unique(ins[..., 1]):
        if inst == 0:
            continue
        mask = ins[..., 1] == inst
        cats = np.unique(ins[..., 0][mask])
        if len(cats) != 1 or cats[0] == 0:
            raise ValueError(
                f"{instance_png}: instance {inst} has instance categories {cats.tolist()}; "
                "expected exactly one in 1..100"
            )
        cat = ADE20K_THING_IDS[int(cats[0]) - 1] - 1
        seg_id = (cat + 1) * _LABEL_DIVISOR + int(inst)
        ids[mask] = seg_id  # things are pasted over stuff where the two releases overlap
        order.append((seg_id, cat))
    segments = []
    for seg_id, cat in order:
        mask = ids == seg_id
        if mask.any():
            segments.append(
                {"id": seg_id, "category_id": cat, "area": int(mask.sum()), "bbox": _bbox(mask),
                 "iscrowd": 0}
            )
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out_png)
    return segments


def convert_ade20k_panoptic_split(ade_root: str | os.PathLike, split: str) -> int:
    """Convert one split of ``ade_root`` (= ``.../ADEChallengeData2016``).

    Args:
        split: ``"training"`` or ``"validation"``; writes ``ade20k_panoptic_{train,val}/`` and
            ``ade20k_panoptic_{train,val}.json`` under ``ade_root``.

    Returns:
        The number of images converted. An existing JSON is not overwritten
        (``FileExistsError``): delete it to convert again.
    """
    names = {"training": "train", "validation": "val"}
    if split not in names:
        raise ValueError(f"split must be one of {sorted(names)}, got {split!r}")
    root = Path(ade_root)
    image_dir = root / "images" / split
    out_dir = root / f"ade20k_panoptic_{names[split]}"
    out_json = root / f"ade20k_panoptic_{names[split]}.json"
    if out_json.exists():
        raise FileExistsError(f"{out_json} exists; delete it to convert {split} again")
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"no *.jpg images in {image_dir}")
    json_images, annotations = [], []
    for image in images:
        stem = image.stem
        try:  # D2's COCO-panoptic loader needs integer image ids: ADE_val_00000001 -> 1
            image_id = int(stem.rsplit("_", 1)[-1])
        except ValueError:
            raise ValueError(f"{image}: expected an ADE20K name ending in _<number>") from None
        with Image.open(image) as img:
            width, height = img.size
        segments = convert_ade20k_panoptic_image(
            root / "annotations" / split / f"{stem}.png",
            root / "annotations_instance" / split / f"{stem}.png",
            out_dir / f"{stem}.png",
        )
        json_images.append(
            {"id": image_id, "file_name": image.name, "width": width, "height": height}
        )
        annotations.append(
            {"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments}
        )
    data = {
        "images": json_images,
        "annotations": annotations,
        "categories": ade20k_panoptic_categories(),
    }
    tmp = out_json.with_name(out_json.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, out_json)  # the JSON appears complete or not at all
    return len(images)
