"""Fill patterns and shapes of the synthetic scenes (knet_d2/data/synthetic_textures.py)."""

from __future__ import annotations

import numpy as np
import pytest

from knet_d2.data.synthetic_textures import (
    DISTRACTOR_SHAPES,
    STUFF_FILLS,
    pattern_weights,
    random_colour_pair,
    random_object_fill,
    render_fill,
    shape_mask,
    stuff_fill,
)

SIZE = 128


def _variation(w: np.ndarray) -> tuple:
    """Mean absolute change of a weight map along x and along y."""
    return float(np.abs(np.diff(w, axis=1)).mean()), float(np.abs(np.diff(w, axis=0)).mean())


@pytest.mark.parametrize("seed", range(5))
def test_stuff_patterns_have_their_class_orientation(seed):
    rng = np.random.default_rng(seed)
    w = {name: pattern_weights(*stuff_fill(name, rng, SIZE)[:2], SIZE) for name in STUFF_FILLS}
    gx, gy = _variation(w["grass"])  # vertical stripes: change along x
    assert gx > 3 * gy
    gx, gy = _variation(w["water"])  # horizontal stripes: change along y
    assert gy > 3 * gx
    gx, gy = _variation(w["wall"])  # checkerboard: both
    assert 0.5 < gx / gy < 2 and gx > 0.1
    gx, gy = _variation(w["sky"])  # smooth blobs: small change per pixel in both directions
    assert max(gx, gy) < 0.5 * min(_variation(w["grass"])[0], _variation(w["wall"])[0])
    for m in w.values():
        assert m.shape == (SIZE, SIZE) and m.min() >= 0 and m.max() <= 1 and m.std() > 0.1


def test_colours_come_from_one_palette_for_all_classes():
    """Stuff and object colours are drawn the same way: their mean colours over many draws
    agree, and every pair has visibly different colours."""
    rng = np.random.default_rng(0)
    means = {}
    for name in STUFF_FILLS:
        means[name] = np.mean([np.concatenate(stuff_fill(name, rng, SIZE)[2:]) for _ in range(300)],
                              axis=0)
    objects = np.mean([np.concatenate(random_object_fill(rng, SIZE)[2:]) for _ in range(300)],
                      axis=0)
    for m in means.values():
        assert np.abs(m - objects).max() < 20
    for _ in range(50):
        a, b = random_colour_pair(rng)
        assert np.linalg.norm(a - b) >= 70


def test_render_fill_blends_its_two_colours():
    fill = ("stripes", {"angle": 0.0, "period": 8.0, "phase": 0.0},
            np.array([10.0, 20.0, 30.0], np.float32), np.array([200.0, 100.0, 0.0], np.float32))
    tex = render_fill(fill, SIZE)
    assert tex.shape == (SIZE, SIZE, 3)
    colours = {tuple(c) for c in np.round(tex.reshape(-1, 3)).astype(int)}
    assert (10, 20, 30) in colours and (200, 100, 0) in colours
    solid = render_fill(("solid", {}, fill[2], fill[3]), 16)
    assert np.all(solid == fill[2])
    with pytest.raises(ValueError, match="wavy"):
        pattern_weights("wavy", {}, 8)


@pytest.mark.parametrize("kind", ("circle", "square", "triangle", "star") + DISTRACTOR_SHAPES)
def test_shapes_fit_their_circle(kind):
    r = 20.0
    mask = shape_mask(kind, 64.0, 64.0, r, 0.3, SIZE)
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 0.1 * np.pi * r * r
    assert np.hypot(xs - 64, ys - 64).max() <= r + 1
    if kind == "ring":
        assert not mask[64, 64]  # the hole
    with pytest.raises(ValueError, match="hexagon"):
        shape_mask("hexagon", 64.0, 64.0, r, 0.0, SIZE)
