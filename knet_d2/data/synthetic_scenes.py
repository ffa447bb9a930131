"""Rendering of the synthetic segmentation scenes (the data of :mod:`knet_d2.data.synthetic`).

Generator version 2. Every image shows 1-3 stuff regions (sky, grass, wall, water) separated
by wavy boundaries at a random angle, 2-8 thing shapes (circle, square, triangle, star) and
0-3 unlabeled distractor shapes (cross, ring, bar, crescent), drawn in random order so that
later shapes partially occlude earlier ones; then lighting, blur and noise.

Which cue identifies each class, and why no cheaper cue does:

* **Stuff is identified by texture only.** sky = smooth random blobs, grass = vertical stripes,
  wall = axis-aligned checkerboard, water = horizontal stripes (orientations within +-10
  degrees; :data:`~knet_d2.data.synthetic_textures.STUFF_FILLS`). The two colours of every
  region come from one palette shared by all classes (and by things and distractors), so a
  pixel's colour carries no class information: a colour-only classifier is at chance among the
  stuff classes (``tests/data/test_synthetic_scenes.py`` measures it). Region position, size
  and boundary shape are drawn the same way for every class.
* **Things are identified by shape only.** A thing's fill is drawn from the same palette and
  the same pattern families as stuff, at any orientation (so a square may carry exactly the
  texture of grass), and distractor shapes have the same fills, sizes and placement, so "a
  compact textured blob" does not mean "thing": only the outline geometry (round, four
  corners, three corners, five points) separates the four thing classes from each other and
  from the distractors, whose pixels are labelled as the stuff below them.
* **No outline cue.** Nothing draws a border: an edge is only the colour change between two
  fills, the same for thing/stuff, distractor/stuff and stuff/stuff boundaries, and the whole
  image is blurred alike (the test compares the gradient magnitudes).
* Scale, count, touching and occlusion: shape diameters are uniform in 3%-35% of the image side
  (4-45 px at 128 px); new shapes are placed touching an earlier one 30% of the time, half of
  those with the same fill (same-coloured touching instances); a placement is rejected when it
  would leave any earlier shape with less than 30% of its pixels visible (occlusion <= 70%).
* Photometry: a linear lighting gradient with a global gain (0.7-1.2) and a colour cast, a
  Gaussian blur (sigma 0-0.9 px) and Gaussian noise (sigma 2-8), so exact pixel values do not
  repeat between regions.

Dataset category ids are deliberately non-contiguous (things 1, 3, 5, 7; stuff 101, 103, 105,
107) so that the dataset-id -> contiguous-id mapping is exercised. Contiguous ids put the
things first, then the stuff, each in dataset-id order (the D2 COCO panoptic convention).
Pixels within 1 px of a stuff/stuff boundary are unlabeled (255 / panoptic id 0).

Image ``i`` of a split depends only on ``(seed, i)`` (:func:`render_sample`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .synthetic_textures import (
    DISTRACTOR_SHAPES,
    random_object_fill,
    render_fill,
    shape_mask,
    stuff_fill,
)

__all__ = [
    "THING_CATEGORIES",
    "STUFF_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "IGNORE_LABEL",
    "SIZE_RANGE",
    "MAX_OCCLUSION",
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

#: Shape diameters, as fractions of the image side (uniform in this range).
SIZE_RANGE = (0.03, 0.35)
#: Largest fraction of a shape that later shapes may hide.
MAX_OCCLUSION = 0.7

_NUM_THINGS = len(THING_CATEGORIES)
_CROWD_EVERY = 7  # image i with i % 7 == 3 gets one crowd thing
_NUM_THINGS_RANGE = (2, 8)
_NUM_DISTRACTORS_RANGE = (0, 3)
_TOUCH_PROB = 0.3  # a new shape is placed touching an earlier one
_SAME_FILL_PROB = 0.5  # ... and then copies its fill
_MIN_AREA = 6  # pixels of a whole (unoccluded) shape


@dataclass
class SyntheticSample:
    """One rendered image with its ground truth (all arrays are H x W[ x 3]).

    ``segments`` hold ``id, category_id, iscrowd, mask`` and, for things, ``diameter`` and
    ``full_area`` (px, of the whole shape before occlusion); ``distractors`` are the visible
    masks of the unlabeled distractor shapes (their pixels carry the stuff label below them).
    """

    image: np.ndarray  # uint8 RGB
    panoptic: np.ndarray  # int32 segment ids, 0 = unlabeled
    semantic: np.ndarray  # uint8 contiguous class ids, 255 = unlabeled
    segments: list[dict] = field(default_factory=list)
    distractors: list[np.ndarray] = field(default_factory=list)


def _stuff_layout(size: int, rng: np.random.Generator) -> np.ndarray:
    """Index (into STUFF_CATEGORIES) of the stuff class of every pixel: 1-3 wavy bands whose
    boundaries run at a random angle."""
    num_regions = int(rng.integers(1, 4))
    classes = rng.choice(len(STUFF_CATEGORIES), size=num_regions, replace=False)
    if num_regions == 1:
        return np.full((size, size), classes[0], np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    ang = rng.uniform(0, np.pi)
    along = np.cos(ang) * xx + np.sin(ang) * yy
    across = -np.sin(ang) * xx + np.cos(ang) * yy
    if num_regions == 2:
        bases = [rng.uniform(-0.2, 0.2) * size]
    else:
        bases = [rng.uniform(-0.3, -0.1) * size, rng.uniform(0.1, 0.3) * size]
    region = np.zeros((size, size), np.int64)
    for base in bases:
        amp = rng.uniform(0.02, 0.08) * size
        period = rng.uniform(0.5, 1.5) * size
        curve = base + amp * np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
        region += across > curve
    return classes[region]


def _place(kind: str, size: int, anchors: list, rng: np.random.Generator):
    """One random placement of ``kind``: (mask, diameter, (cx, cy, radius), index of the
    touched shape or -1), or None when a touching placement leaves the image."""
    diameter = rng.uniform(*SIZE_RANGE) * size
    radius = diameter / 2
    touched = -1
    if anchors and rng.random() < _TOUCH_PROB:
        touched = int(rng.integers(0, len(anchors)))
        ax, ay, ar = anchors[touched]
        phi = rng.uniform(0, 2 * np.pi)
        cx, cy = ax + 0.85 * (ar + radius) * np.cos(phi), ay + 0.85 * (ar + radius) * np.sin(phi)
        if not (radius <= cx <= size - radius and radius <= cy <= size - radius):
            return None
    else:
        cx, cy = rng.uniform(radius, size - radius, 2)
    mask = shape_mask(kind, cx, cy, radius, rng.uniform(0, 2 * np.pi), size)
    return mask, diameter, (cx, cy, radius), touched


def _photometry(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting gradient + gain + colour cast, Gaussian blur, Gaussian noise (float32 RGB)."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    gx, gy = rng.uniform(-0.4, 0.4, 2)
    gain = rng.uniform(0.7, 1.2) + gx * xx + gy * yy
    cast = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    image = image * gain[..., None] * cast
    sigma = rng.uniform(0.0, 0.9)
    if sigma > 0.2:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    noise = rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape).astype(np.float32)
    return image + noise


def render_sample(index: int, image_size: int = 128, seed: int = 0) -> SyntheticSample:
    """Render image ``index`` of a split; the result depends only on (seed, index, size).

    Args:
        index: image index inside the split.
        image_size: height = width in pixels (>= 64).
        seed: split seed.

    Returns:
        The image, its panoptic id map, its semantic label map, the segments (with masks) and
        the distractor masks.
    """
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    rng = np.random.default_rng([seed, index])
    size = image_size

    # Stuff: wavy bands, a 2 px unlabeled band along the region boundaries.
    stuff = _stuff_layout(size, rng)
    image = np.zeros((size, size, 3), np.float32)
    for k in np.unique(stuff):
        tex = render_fill(stuff_fill(STUFF_CATEGORIES[k]["name"], rng, size), size)
        image[stuff == k] = tex[stuff == k]
    kernel = np.ones((3, 3), np.uint8)
    s8 = stuff.astype(np.uint8)
    boundary = cv2.dilate(s8, kernel) != cv2.erode(s8, kernel)

    # Shapes in random z-order: kinds 0..3 are things, names are distractors.
    kinds: list = [int(k) for k in rng.integers(0, _NUM_THINGS, rng.integers(
        _NUM_THINGS_RANGE[0], _NUM_THINGS_RANGE[1] + 1))]
    kinds += [str(rng.choice(DISTRACTOR_SHAPES)) for _ in range(int(rng.integers(
        _NUM_DISTRACTORS_RANGE[0], _NUM_DISTRACTORS_RANGE[1] + 1)))]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    owner = np.full((size, size), -1, np.int64)  # index of the top-most placed shape per pixel
    placed: list[dict] = []  # kind, diameter, full area, fill
    anchors: list[tuple] = []
    for kind in kinds:
        name = THING_CATEGORIES[kind]["name"] if isinstance(kind, int) else kind
        for _attempt in range(30):
            got = _place(name, size, anchors, rng)
            if got is None:
                continue
            mask, diameter, anchor, touched = got
            if mask.sum() < _MIN_AREA:
                continue
            n = len(placed)
            covered = np.bincount(owner[mask] + 1, minlength=n + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=n + 1)[1:]
            full = np.array([p["area"] for p in placed], np.int64)
            if np.all(visible - covered >= (1.0 - MAX_OCCLUSION) * full):
                break
        else:
            continue
        if touched >= 0 and rng.random() < _SAME_FILL_PROB:
            fill = placed[touched]["fill"]
        else:
            fill = random_object_fill(rng, size)
        image[mask] = render_fill(fill, size)[mask]
        owner[mask] = len(placed)
        placed.append({"kind": kind, "diameter": diameter, "area": int(mask.sum()), "fill": fill})
        anchors.append(anchor)

    things = [j for j, p in enumerate(placed) if isinstance(p["kind"], int)]
    crowd_index = -1
    if index % _CROWD_EVERY == 3 and things:
        crowd_index = things[int(rng.integers(0, len(things)))]
    image = _photometry(image, rng)

    # Ground truth: a distractor's pixels keep the stuff label below it.
    is_thing_px = np.isin(owner, things)
    panoptic = np.zeros((size, size), np.int32)
    semantic = np.full((size, size), IGNORE_LABEL, np.uint8)
    segments: list[dict] = []
    stuff_pixels = ~is_thing_px & ~boundary
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
    for j in things:
        kind, mask = placed[j]["kind"], owner == j
        cat = THING_CATEGORIES[kind]
        per_class_count[kind] += 1
        seg_id = cat["id"] * 1000 + per_class_count[kind]
        panoptic[mask] = seg_id
        semantic[mask] = kind
        segments.append({"id": seg_id, "category_id": cat["id"], "iscrowd": int(j == crowd_index),
                         "mask": mask, "diameter": placed[j]["diameter"],
                         "full_area": placed[j]["area"]})
    segments.sort(key=lambda s: s["id"])
    distractors = [owner == j for j, p in enumerate(placed) if not isinstance(p["kind"], int)]
    rgb = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return SyntheticSample(image=rgb, panoptic=panoptic, semantic=semantic, segments=segments,
                           distractors=distractors)
