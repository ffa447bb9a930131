"""Colours, fill patterns and shape masks of the synthetic scenes (:mod:`.synthetic_scenes`).

A *fill* is two colours and a pattern: ``texture = (1 - w) * colour_a + w * colour_b`` with a
weight map ``w`` in [0, 1] of one of the families below. The colours of every fill (stuff,
things and distractors alike) come from :func:`random_colour_pair`, one shared palette, so a
colour says nothing about the class.

Pattern families (H x W float32 weight maps):

* ``stripes``: a sharpened sine wave with a direction, period and phase;
* ``checker``: a checkerboard with a cell size and a rotation;
* ``clouds``: smooth random blobs (bicubically enlarged low-resolution noise);
* ``solid``: w = 0 (things and distractors only).

Stuff classes use one family at a class-specific orientation (:data:`STUFF_FILLS`); things and
distractors draw their fill from all families at any orientation (:func:`random_object_fill`),
so a thing can carry exactly the texture of a stuff class and is told apart only by its shape.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "STUFF_FILLS",
    "DISTRACTOR_SHAPES",
    "random_colour_pair",
    "pattern_weights",
    "stuff_fill",
    "random_object_fill",
    "render_fill",
    "shape_mask",
]

#: Stuff class name -> (pattern family, orientation in degrees of the pattern's wave vector,
#: allowed deviation). Orientations are horizontal / vertical only, so horizontal flips (a
#: training augmentation) keep every class's cue.
STUFF_FILLS: dict[str, tuple[str, float, float]] = {
    "sky": ("clouds", 0.0, 0.0),  # smooth blobs, no periodic structure
    "grass": ("stripes", 0.0, 10.0),  # wave along x: vertical lines
    "wall": ("checker", 0.0, 10.0),  # axis-aligned checkerboard
    "water": ("stripes", 90.0, 10.0),  # wave along y: horizontal lines
}
#: Unlabeled shapes drawn like things (their pixels keep the label of the stuff below).
DISTRACTOR_SHAPES: tuple[str, ...] = ("cross", "ring", "bar", "crescent")

_MIN_COLOUR_DISTANCE = 70.0  # the two colours of a fill differ visibly (L2 in RGB)


def _hsv_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(30, 256), rng.integers(50, 256)]]], np.uint8
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def random_colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB float32 colours (3,) from the shared palette, at least 70 apart (L2)."""
    a = _hsv_colour(rng)
    for _ in range(20):
        b = _hsv_colour(rng)
        if np.linalg.norm(a - b) >= _MIN_COLOUR_DISTANCE:
            break
    return a, b


def pattern_weights(family: str, params: dict, size: int) -> np.ndarray:
    """(size, size) float32 weight map in [0, 1] of one pattern family (module docstring)."""
    if family == "solid":
        return np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ang = np.deg2rad(params.get("angle", 0.0))
    u = np.cos(ang) * xx + np.sin(ang) * yy  # along the wave vector
    v = -np.sin(ang) * xx + np.cos(ang) * yy
    if family == "stripes":
        wave = np.sin(2 * np.pi * u / params["period"] + params["phase"])
        return np.clip(0.5 + 1.5 * wave, 0.0, 1.0).astype(np.float32)
    if family == "checker":
        cell = params["cell"]
        parity = (np.floor(u / cell + params["phase"]) + np.floor(v / cell)) % 2
        return parity.astype(np.float32)
    if family == "clouds":
        low = max(2, int(round(size / params["blob"])))
        noise = params["noise"][:low, :low]
        big = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
        return np.clip(0.5 + 0.9 * big, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"unknown pattern family {family!r}")


def _family_params(family: str, angle: float, rng: np.random.Generator, size: int) -> dict:
    """Random size / phase parameters of a family (scaled from a 128 px image)."""
    scale = size / 128.0
    if family == "stripes":
        return {"angle": angle, "period": rng.uniform(5.0, 9.0) * scale,
                "phase": rng.uniform(0, 2 * np.pi)}
    if family == "checker":
        return {"angle": angle, "cell": rng.uniform(3.0, 5.5) * scale, "phase": rng.uniform(0, 1)}
    if family == "clouds":
        return {"blob": rng.uniform(8.0, 16.0) * scale,
                "noise": rng.standard_normal((64, 64)).astype(np.float32)}
    return {}


def stuff_fill(name: str, rng: np.random.Generator, size: int) -> tuple:
    """``(family, params, colour_a, colour_b)`` of one region of stuff class ``name``."""
    family, angle, spread = STUFF_FILLS[name]
    params = _family_params(family, angle + rng.uniform(-spread, spread), rng, size)
    return (family, params, *random_colour_pair(rng))


def random_object_fill(rng: np.random.Generator, size: int) -> tuple:
    """``(family, params, colour_a, colour_b)`` of a thing or distractor: any family
    (solid 30%, stripes 30%, checker 20%, clouds 20%) at any orientation."""
    family = str(rng.choice(["solid", "stripes", "checker", "clouds"], p=[0.3, 0.3, 0.2, 0.2]))
    params = _family_params(family, rng.uniform(0.0, 180.0), rng, size)
    return (family, params, *random_colour_pair(rng))


def render_fill(fill: tuple, size: int) -> np.ndarray:
    """(size, size, 3) float32 RGB texture of a fill from :func:`stuff_fill` /
    :func:`random_object_fill`."""
    family, params, a, b = fill
    w = pattern_weights(family, params, size)[..., None]
    return (1.0 - w) * a + w * b


def _polygon_mask(vertices: np.ndarray, size: int) -> np.ndarray:
    """Hard (non anti-aliased) bool mask of an (N, 2) polygon, 1/16 px vertex precision."""
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(vertices * 16).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _regular(cx: float, cy: float, radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def _rotated_rect(cx: float, cy: float, half_w: float, half_h: float, theta: float) -> np.ndarray:
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return corners @ rot.T + np.array([cx, cy])


def shape_mask(kind: str, cx: float, cy: float, radius: float, theta: float,
               size: int) -> np.ndarray:
    """(size, size) bool mask of a thing or distractor shape of circumradius ``radius``.

    Things: circle, square, triangle, star. Distractors (:data:`DISTRACTOR_SHAPES`): cross
    (two bars), ring (a circle with a hole of 55% of its radius), bar (aspect 3.5), crescent
    (a circle minus a shifted circle).
    """
    n = np.arange
    if kind == "circle" or kind in ("ring", "crescent"):
        disc = _polygon_mask(_regular(cx, cy, np.full(64, radius), n(64) * np.pi / 32), size)
        if kind == "circle":
            return disc
        if kind == "ring":
            inner_r, ox, oy = 0.55 * radius, cx, cy
        else:
            inner_r = 0.8 * radius
            ox, oy = cx + 0.5 * radius * np.cos(theta), cy + 0.5 * radius * np.sin(theta)
        hole = _polygon_mask(_regular(ox, oy, np.full(64, inner_r), n(64) * np.pi / 32), size)
        return disc & ~hole
    if kind == "square":
        return _polygon_mask(_regular(cx, cy, np.full(4, radius), theta + np.pi / 4
                                      + n(4) * np.pi / 2), size)
    if kind == "triangle":
        return _polygon_mask(_regular(cx, cy, np.full(3, radius), theta + n(3) * 2 * np.pi / 3),
                             size)
    if kind == "star":
        radii = np.where(n(10) % 2 == 0, radius, 0.45 * radius)
        return _polygon_mask(_regular(cx, cy, radii, theta + n(10) * np.pi / 5), size)
    if kind == "bar":
        half_l = radius * np.cos(np.arctan(1 / 3.5))
        return _polygon_mask(_rotated_rect(cx, cy, half_l, half_l / 3.5, theta), size)
    if kind == "cross":
        half_l, half_w = 0.95 * radius, 0.3 * radius
        a = _polygon_mask(_rotated_rect(cx, cy, half_l, half_w, theta), size)
        return a | _polygon_mask(_rotated_rect(cx, cy, half_w, half_l, theta), size)
    raise ValueError(f"unknown shape {kind!r}")
