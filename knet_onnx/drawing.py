"""Pictures of the runtime's predictions with OpenCV: coloured masks blended over the image,
white outlines, class labels (and scores for things), boxes for instances.

Colours are the class colours recorded at export (the dataset's), so the pictures look like the
PyTorch demo's. Only what is drawn depends on the confidence threshold, never the predictions.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["Segment", "draw_segments", "panoptic_segments", "instance_segments",
           "semantic_segments"]

#: (mask (H, W) bool, RGB colour, label text, XYXY box or None)
Segment = Tuple[np.ndarray, Sequence[int], str, Optional[Sequence[float]]]


def _label_anchor(mask: np.ndarray) -> Tuple[int, int]:
    """(x, y) of the mask pixel farthest from its border: the label stays inside the mask."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x), int(y)


def draw_segments(image_bgr: np.ndarray, segments: List[Segment], alpha: float = 0.5) -> np.ndarray:
    """``image_bgr`` (H, W, 3) uint8 with every segment's mask blended in its colour,
    outlined, labelled; returns a new BGR image."""
    canvas = image_bgr.astype(np.float32)
    for mask, color, _, _ in segments:
        bgr = np.asarray(color[::-1], dtype=np.float32)
        canvas[mask] = canvas[mask] * (1 - alpha) + bgr * alpha
    out = canvas.round().clip(0, 255).astype(np.uint8)
    scale = max(0.35, min(out.shape[:2]) / 900)
    thickness = max(1, int(round(scale * 2)))
    for mask, color, label, box in segments:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), tuple(int(c) for c in color[::-1]),
                          thickness)
        if mask.any() and label:
            x, y = _label_anchor(mask)
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            org = (max(0, min(x - tw // 2, out.shape[1] - tw)), max(th, y + th // 2))
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                        thickness + 2, cv2.LINE_AA)
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                        thickness, cv2.LINE_AA)
    return out


def panoptic_segments(ids: np.ndarray, segments_info: Sequence[dict],
                      classes: Sequence[dict]) -> List[Segment]:
    """One drawable segment per panoptic segment (things labelled with their score)."""
    segments = []
    for seg in segments_info:
        cls = classes[seg["category_id"]]
        label = cls["name"] + (f" {seg['score']:.0%}" if seg["isthing"] else "")
        segments.append((ids == seg["id"], cls["color"], label, None))
    return segments


def instance_segments(instances: dict, classes: Sequence[dict], threshold: float) -> List[Segment]:
    """Drawable instances scoring at least ``threshold``, lowest score first (drawn under)."""
    keep = np.nonzero(instances["scores"] >= threshold)[0][::-1]
    return [
        (instances["pred_masks"][i], classes[int(instances["pred_classes"][i])]["color"],
         f"{classes[int(instances['pred_classes'][i])]['name']} {instances['scores'][i]:.0%}",
         instances["pred_boxes"][i])
        for i in keep
    ]


def semantic_segments(labels: np.ndarray, classes: Sequence[dict]) -> List[Segment]:
    """One drawable region per class present in the (H, W) label map."""
    return [(labels == c, classes[c]["color"], classes[c]["name"], None)
            for c in np.unique(labels)]
