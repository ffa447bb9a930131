"""Standard file formats for the runtime's predictions, in numpy: COCO panoptic and COCO
results (compressed RLE), without panopticapi or pycocotools.

* :func:`id_map_to_rgb`: COCO panoptic PNG encoding, ``id = R + 256 G + 256^2 B``;
* :func:`panoptic_annotation`: one ``annotations`` entry of a COCO panoptic JSON, with
  dataset category ids, ``area`` and ``bbox`` ([x, y, w, h]) per segment;
* :func:`rle_encode`: a binary mask as COCO's compressed RLE (``{"size", "counts"}``), the
  ``segmentation`` of a COCO instance-results entry (:func:`instance_results`).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

__all__ = [
    "id_map_to_rgb",
    "rgb_to_id_map",
    "panoptic_annotation",
    "rle_encode",
    "instance_results",
]


def id_map_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 RGB of the COCO panoptic format."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)


def rgb_to_id_map(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`id_map_to_rgb`: (H, W, 3) RGB -> (H, W) int64 ids."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def _xywh(mask: np.ndarray) -> List[int]:
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def panoptic_annotation(
    ids: np.ndarray, segments_info: Sequence[dict], classes: Sequence[dict], image_id: str,
    file_name: str,
) -> dict:
    """COCO panoptic ``annotations`` entry of one image.

    Args:
        ids: (H, W) segment ids (0 = void).
        segments_info: the model's segments (``id``, contiguous ``category_id``, ``score``).
        classes: the export's class table (``dataset_id`` per contiguous id).
        image_id / file_name: of the annotation (the PNG's name).
    """
    segments = []
    for seg in segments_info:
        mask = ids == seg["id"]
        cls = classes[seg["category_id"]]
        segments.append({
            "id": int(seg["id"]),
            "category_id": int(cls["dataset_id"]),
            "iscrowd": 0,
            "area": int(mask.sum()),
            "bbox": _xywh(mask),
            "isthing": bool(seg["isthing"]),
            "score": round(float(seg["score"]), 6),
        })
    return {"image_id": image_id, "file_name": file_name, "segments_info": segments}


def _leb_string(counts: np.ndarray) -> str:
    """COCO's string form of run lengths: each run minus the run two before (from the
    fourth on) in 5-bit groups, 0x20 = more groups follow, offset by 48 (maskApi.c)."""
    out = []
    values = [int(v) for v in counts]
    for i, value in enumerate(values):
        x = value - values[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_encode(mask: np.ndarray) -> Dict[str, object]:
    """(H, W) bool mask -> COCO compressed RLE ``{"size": [H, W], "counts": str}``: run
    lengths in column-major order, starting with a (possibly empty) run of zeros."""
    h, w = mask.shape
    flat = mask.reshape(-1, order="F").astype(np.int8)
    changes = np.nonzero(np.diff(flat))[0] + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds)
    if flat.size and flat[0] == 1:
        runs = np.concatenate([[0], runs])
    return {"size": [int(h), int(w)], "counts": _leb_string(runs.astype(np.int64))}


def instance_results(
    instances: Dict[str, np.ndarray], classes: Sequence[dict], image_id: str
) -> List[dict]:
    """COCO instance-results entries (``image_id``, dataset ``category_id``, ``bbox``
    [x, y, w, h] = the tight box of the mask, ``score``, RLE ``segmentation``)."""
    results = []
    for mask, score, cls, box in zip(
        instances["pred_masks"], instances["scores"], instances["pred_classes"],
        instances["pred_boxes"],
    ):
        x0, y0, x1, y1 = (float(v) for v in box)
        results.append({
            "image_id": image_id,
            "category_id": int(classes[int(cls)]["dataset_id"]),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": round(float(score), 6),
            "segmentation": rle_encode(mask),
        })
    return results
