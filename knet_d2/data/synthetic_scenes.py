"""Rendering of the synthetic segmentation scenes (the data of :mod:`knet_d2.data.synthetic`).

Every image shows 1-3 textured "stuff" regions (sky, grass, wall, water) separated by wavy
boundaries, and 1-5 "thing" shapes (circle, square, triangle, star) of random colour, texture,
size and rotation drawn on top, later shapes partially occluding earlier ones.

Dataset category ids are deliberately non-contiguous (things 1, 3, 5, 7; stuff 101, 103, 105,
107) so that the dataset-id -> contiguous-id mapping is exercised. Contiguous ids put the
things first, then the stuff, each in dataset-id order (the D2 COCO panoptic convention).

Image ``i`` of a split depends only on ``(seed, i)`` (:func:`render_sample`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "THING_CATEGORIES",
    "STUFF_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "IGNORE_LABEL",
    "SyntheticSample",
    "render_sample",
]

IGNORE_LABEL = 255

THING_CATEGORIES: tuple[dict, ...] = (
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60], "supercategory": "shape"},
    {"id": 3, "name": "square", "isthing": 1, "color": [0, 142, 0], "supercategory": "shape"},
    {"id": 5, "name": "triangle", "isthing": 1, "color": [255, 179, 0], "supercategory": "shape"},
    {"id": 7, "name": "star", "isthing": 1, "color": [166, 74, 218], "supercategory": "shape"},
)
STUFF_CATEGORIES: tuple[dict, ...] = (
    {"id": 101, "name": "sky", "isthing": 0, "color": [70, 130, 180], "supercategory": "scene"},
    {"id": 103, "name": "grass", "isthing": 0, "color": [107, 142, 35], "supercategory": "scene"},
    {"id": 105, "name": "wall", "isthing": 0, "color": [146, 112, 98], "supercategory": "scene"},
    {"id": 107, "name": "water", "isthing": 0, "color": [0, 60, 140], "supercategory": "scene"},
)
#: All categories, things first (this order is also the contiguous-id order).
SYNTHETIC_CATEGORIES: tuple[dict, ...] = THING_CATEGORIES + STUFF_CATEGORIES

_NUM_THINGS = len(THING_CATEGORIES)
_CROWD_EVERY = 7  # image i with i % 7 == 3 gets one crowd thing (~5% of all things)
_MIN_VISIBLE_FRACTION = 0.6  # occlusion never hides more than 40% of a shape


@dataclass
class SyntheticSample:
    """One rendered image with its ground truth (all arrays are H x W[ x 3])."""

    image: np.ndarray  # uint8 RGB
    panoptic: np.ndarray  # int32 segment ids, 0 = unlabeled
    semantic: np.ndarray  # uint8 contiguous class ids, 255 = unlabeled
    segments: list[dict] = field(default_factory=list)  # id, category_id, iscrowd, mask


def _stuff_texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A full-image float32 RGB texture for one stuff class; colour + pattern identify it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    jitter = rng.uniform(-12, 12, 3).astype(np.float32)
    scale = size / 128.0
    if name == "sky":  # light blue, smooth vertical gradient, almost no noise
        tex = np.array([120, 180, 235], np.float32) + jitter
        tex = tex + (30.0 * (1.0 - yy / size))[..., None] * np.array([1.0, 0.8, 0.3], np.float32)
        tex = tex + rng.normal(0, 3, (size, size, 1)).astype(np.float32)
    elif name == "grass":  # green, strong vertical streak noise
        noise = rng.normal(0, 30, (size, size)).astype(np.float32)
        noise = cv2.blur(noise, (1, max(3, int(7 * scale))))
        tex = np.array([55, 130, 45], np.float32) + jitter
        tex = tex + noise[..., None] * np.array([0.5, 1.0, 0.4], np.float32)
    elif name == "wall":  # red-brown bricks with light mortar lines
        row_h = max(4, int(round(8 * scale)))
        row = (yy // row_h).astype(np.int64)
        shift = (row % 2) * row_h
        mortar = (yy % row_h < 1) | ((xx + shift) % (2 * row_h) < 1)
        tex = np.broadcast_to(np.array([165, 85, 60], np.float32) + jitter, (size, size, 3))
        tex = np.where(mortar[..., None], np.array([215, 210, 200], np.float32), tex)
        tex = tex + rng.normal(0, 5, (size, size, 1)).astype(np.float32)
    elif name == "water":  # dark blue, horizontal waves
        phase = rng.uniform(0, 2 * np.pi)
        bend = 2.0 * np.sin(2 * np.pi * xx / (45 * scale))
        wave = np.sin(2 * np.pi * yy / (12 * scale) + bend + phase)
        tex = np.array([25, 65, 135], np.float32) + jitter
        tex = tex + (25.0 * wave)[..., None] * np.array([0.5, 0.8, 1.0], np.float32)
        tex = tex + rng.normal(0, 4, (size, size, 1)).astype(np.float32)
    else:  # pragma: no cover - guarded by STUFF_CATEGORIES
        raise ValueError(f"unknown stuff class {name!r}")
    return tex


def _stuff_layout(size: int, rng: np.random.Generator) -> np.ndarray:
    """Index (into STUFF_CATEGORIES) of the stuff class of every pixel: 1-3 wavy bands."""
    num_regions = int(rng.integers(1, 4))
    classes = rng.choice(len(STUFF_CATEGORIES), size=num_regions, replace=False)
    if num_regions == 1:
        return np.full((size, size), classes[0], np.int64)
    if num_regions == 2:
        bases = [rng.uniform(0.3, 0.7) * size]
    else:
        bases = [rng.uniform(0.2, 0.4) * size, rng.uniform(0.6, 0.8) * size]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    along, across = (xx, yy) if rng.random() < 0.5 else (yy, xx)
    region = np.zeros((size, size), np.int64)
    for base in bases:
        amp = rng.uniform(0.02, 0.08) * size
        period = rng.uniform(0.5, 1.5) * size
        curve = base + amp * np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
        region += across > curve
    return classes[region]


def _shape_vertices(kind: str, cx: float, cy: float, radius: float, theta: float) -> np.ndarray:
    """(N, 2) polygon of a shape with circumradius ``radius`` centred on (cx, cy)."""
    if kind == "circle":
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        radii = np.full(64, radius)
    elif kind == "square":
        angles = theta + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, radius)
    elif kind == "triangle":
        angles = theta + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, radius)
    elif kind == "star":
        angles = theta + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    else:  # pragma: no cover - guarded by THING_CATEGORIES
        raise ValueError(f"unknown thing class {kind!r}")
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _rasterize(vertices: np.ndarray, size: int) -> np.ndarray:
    """Hard (non anti-aliased) bool mask of a polygon, with 1/16 px vertex precision."""
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(vertices * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _thing_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A full-image float32 RGB texture for one shape: saturated colour + a random pattern."""
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(150, 256)]]], np.uint8
    )
    color = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    pattern = int(rng.integers(0, 3))
    if pattern == 0:  # solid
        tex = np.broadcast_to(color, (size, size, 3)) + rng.normal(0, 5, (size, size, 1))
    elif pattern == 1:  # stripes at a random angle
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        ang, period = rng.uniform(0, np.pi), rng.uniform(6, 10) * size / 128.0
        stripe = (np.cos(ang) * xx + np.sin(ang) * yy) % period < period / 2
        tex = np.where(stripe[..., None], color, 0.6 * color)
    else:  # speckle
        tex = np.broadcast_to(color, (size, size, 3)) + rng.normal(0, 20, (size, size, 1))
    return tex.astype(np.float32)


def render_sample(index: int, image_size: int = 128, seed: int = 0) -> SyntheticSample:
    """Render image ``index`` of a split; the result depends only on (seed, index, size).

    Args:
        index: image index inside the split.
        image_size: height = width in pixels (>= 64).
        seed: split seed.

    Returns:
        The image, its panoptic id map, its semantic label map and the segments (with masks).
    """
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    rng = np.random.default_rng([seed, index])
    size = image_size

    # Stuff: wavy bands, a 2 px unlabeled band along the region boundaries.
    stuff = _stuff_layout(size, rng)
    image = np.zeros((size, size, 3), np.float32)
    for k in np.unique(stuff):
        tex = _stuff_texture(STUFF_CATEGORIES[k]["name"], size, rng)
        image[stuff == k] = tex[stuff == k]
    kernel = np.ones((3, 3), np.uint8)
    s8 = stuff.astype(np.uint8)
    boundary = cv2.dilate(s8, kernel) != cv2.erode(s8, kernel)

    # Things: placed one by one; a placement that would hide > 40% of an earlier shape is
    # rejected and retried.
    owner = np.full((size, size), -1, np.int64)  # index of the top-most shape per pixel
    kinds: list[int] = []
    full_areas: list[int] = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(30):
            kind = int(rng.integers(0, _NUM_THINGS))
            radius = rng.uniform(0.08, 0.18) * size
            cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
            verts = _shape_vertices(
                THING_CATEGORIES[kind]["name"], cx, cy, radius, rng.uniform(0, 2 * np.pi)
            )
            mask = _rasterize(verts, size)
            covered = np.bincount(owner[mask] + 1, minlength=len(kinds) + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=len(kinds) + 1)[1:]
            if all(
                visible[j] - covered[j] >= _MIN_VISIBLE_FRACTION * full_areas[j]
                for j in range(len(kinds))
            ):
                break
        else:
            continue
        tex = _thing_texture(size, rng)
        outline = mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
        image[mask] = tex[mask]
        image[outline] *= 0.45
        owner[mask] = len(kinds)
        kinds.append(kind)
        full_areas.append(int(mask.sum()))

    crowd_index = -1
    if index % _CROWD_EVERY == 3 and kinds:
        crowd_index = int(rng.integers(0, len(kinds)))

    # Ground truth.
    panoptic = np.zeros((size, size), np.int32)
    semantic = np.full((size, size), IGNORE_LABEL, np.uint8)
    segments: list[dict] = []
    stuff_pixels = (owner < 0) & ~boundary
    for k in np.unique(stuff):
        mask = stuff_pixels & (stuff == k)
        if not mask.any():
            continue
        cat = STUFF_CATEGORIES[k]
        seg_id = cat["id"] * 1000
        panoptic[mask] = seg_id
        semantic[mask] = _NUM_THINGS + k
        segments.append({"id": seg_id, "category_id": cat["id"], "iscrowd": 0, "mask": mask})
    per_class_count = [0] * _NUM_THINGS
    for j, kind in enumerate(kinds):
        mask = owner == j
        cat = THING_CATEGORIES[kind]
        per_class_count[kind] += 1
        seg_id = cat["id"] * 1000 + per_class_count[kind]
        panoptic[mask] = seg_id
        semantic[mask] = kind
        segments.append(
            {"id": seg_id, "category_id": cat["id"], "iscrowd": int(j == crowd_index), "mask": mask}
        )
    segments.sort(key=lambda s: s["id"])
    rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return SyntheticSample(image=rgb, panoptic=panoptic, semantic=semantic, segments=segments)
