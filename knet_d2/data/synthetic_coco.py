"""On-disk format of a synthetic split: COCO panoptic, COCO instance and D2 semantic files.

One split is written as::

    <split dir>/
        images/000000.jpg        RGB, JPEG quality 95
        panoptic/000000.png      COCO panoptic PNG (segment id = R + 256 G + 256^2 B)
        panoptic.json            COCO panoptic JSON (images, annotations, categories)
        instances.json           COCO instance JSON (things only; polygons, RLE, crowd RLE)
        semantic/000000.png      L-mode labels: things 0..T-1, stuff T..T+S-1, 255 = unlabeled
        info.json                generator parameters; written last (marks a complete split)

The images come from :func:`~knet_d2.data.synthetic_scenes.render_sample`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image
from pycocotools import mask as mask_util

from .synthetic_scenes import SYNTHETIC_CATEGORIES, THING_CATEGORIES, render_sample

__all__ = ["GENERATOR_VERSION", "JPEG_QUALITY", "write_split"]

#: Stamped into info.json; a split with another version is regenerated on load, so bump it
#: whenever the rendered scenes or the written files change.
GENERATOR_VERSION = 2
#: Quality of the written JPEG images (images/*.jpg).
JPEG_QUALITY = 95


def _bbox_xywh(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd encoding: column-major run lengths, starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _polygons(mask: np.ndarray) -> list[list[float]] | None:
    """Polygons (COCO pixel-corner coordinates) from cv2.findContours of a visible mask.

    Contours are traced on a 2x upsampled mask, so each vertex lies a quarter pixel inside
    the mask border; the polygon then contains exactly the centres of the mask's pixels.
    Returns None when the polygons do not rasterize back to exactly ``mask`` (holes,
    one-pixel-thin parts), in which case the caller falls back to RLE.
    """
    up = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [
        (c.reshape(-1, 2) / 2.0 + 0.25).ravel().tolist() for c in contours if len(c) >= 3
    ]
    if not polys:
        return None
    h, w = mask.shape
    decoded = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polys, h, w)))
    return polys if np.array_equal(decoded.astype(bool), mask) else None


def write_split(out: Path, num_images: int, image_size: int, seed: int) -> None:
    """Render ``num_images`` images and write them with their annotations into ``out``.

    The sub-folders of ``out`` must not exist yet; the layout is described in the module
    docstring. info.json (the generator parameters and :data:`GENERATOR_VERSION`) is written
    last.
    """
    for sub in ("images", "panoptic", "semantic"):
        (out / sub).mkdir(parents=True)
    images, pan_anns, inst_anns = [], [], []
    ann_id = 1
    for i in range(num_images):
        sample = render_sample(i, image_size, seed)
        stem = f"{i:06d}"
        cv2.imwrite(
            str(out / "images" / f"{stem}.jpg"),
            np.ascontiguousarray(sample.image[:, :, ::-1]),
            [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY],
        )
        Image.fromarray(id2rgb(sample.panoptic).astype(np.uint8)).save(
            out / "panoptic" / f"{stem}.png"
        )
        Image.fromarray(sample.semantic).save(out / "semantic" / f"{stem}.png")
        images.append({"id": i, "file_name": f"{stem}.jpg", "height": image_size,
                       "width": image_size})
        segments_info = []
        for k, seg in enumerate(sample.segments):
            mask, area, bbox = seg["mask"], int(seg["mask"].sum()), _bbox_xywh(seg["mask"])
            segments_info.append({"id": seg["id"], "category_id": seg["category_id"],
                                  "area": area, "bbox": bbox, "iscrowd": seg["iscrowd"]})
            if seg["category_id"] not in {c["id"] for c in THING_CATEGORIES}:
                continue
            if seg["iscrowd"]:
                segm = _uncompressed_rle(mask)
            else:
                segm = _polygons(mask) if (i + k) % 2 == 0 else None
                segm = segm if segm is not None else _compressed_rle(mask)
            inst_anns.append({"id": ann_id, "image_id": i, "category_id": seg["category_id"],
                              "segmentation": segm, "area": float(area),
                              "bbox": [float(v) for v in bbox], "iscrowd": seg["iscrowd"]})
            ann_id += 1
        pan_anns.append({"image_id": i, "file_name": f"{stem}.png",
                         "segments_info": segments_info})

    info = {"description": "knet_d2 synthetic segmentation data", "version": GENERATOR_VERSION,
            "num_images": num_images, "image_size": image_size, "seed": seed}
    common = {"info": info, "licenses": [], "images": images}
    pan_json = dict(common, annotations=pan_anns,
                    categories=[dict(c) for c in SYNTHETIC_CATEGORIES])
    thing_cats = [{k: c[k] for k in ("id", "name", "supercategory")} for c in THING_CATEGORIES]
    inst_json = dict(common, annotations=inst_anns, categories=thing_cats)
    (out / "panoptic.json").write_text(json.dumps(pan_json))
    (out / "instances.json").write_text(json.dumps(inst_json))
    (out / "info.json").write_text(json.dumps(info, indent=2))  # last: marks completion
