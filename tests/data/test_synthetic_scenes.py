"""The synthetic scenes (generator version 2) have no cheap cue: colour does not identify stuff,
no outline marks things, distractors are stuff, sizes span 3-35% of the side, occlusion <= 70%.

Bounds below were measured with this generator and with version 1 (the previous scenes, git
history of knet_d2/data/synthetic_scenes.py) on the same protocol, and sit between the two with
a margin on the side of version 2.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.synthetic_baselines import ColourHistogramClassifier
from knet_d2.data.synthetic_scenes import (
    MAX_OCCLUSION,
    SIZE_RANGE,
    STUFF_CATEGORIES,
    THING_CATEGORIES,
    render_sample,
)

SIZE = 128
NUM_THINGS = len(THING_CATEGORIES)
_KERNEL = np.ones((3, 3), np.uint8)


@pytest.fixture(scope="module")
def val_samples():
    return [render_sample(i, SIZE, seed=2) for i in range(40)]


def _band(mask: np.ndarray) -> np.ndarray:
    """The 2 px band along the border of a mask (1 px inside, 1 px outside)."""
    m = mask.astype(np.uint8)
    return cv2.dilate(m, _KERNEL) != cv2.erode(m, _KERNEL)


def _gradient(image: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def _things(sample):
    return [s for s in sample.segments if s["category_id"] < 100]


def test_colour_only_classifier_is_at_chance_on_stuff(val_samples):
    """The best colour-only pixel rule (a 32^3 RGB histogram, fit on 100 other images) labels
    stuff pixels correctly ~25% of the time, chance among the 4 stuff classes (measured: 0.235
    with this protocol, 0.246 with 400 training images). On version 1 the same protocol gave
    0.983 (0.998 with 400 images): stuff was told apart by colour alone. Bound: 0.40."""
    clf = ColourHistogramClassifier(len(THING_CATEGORIES) + len(STUFF_CATEGORIES))
    for i in range(100):
        s = render_sample(i, SIZE, seed=1)
        clf.update(s.image, s.semantic)
    correct = total = 0
    for s in val_samples:
        gt = s.semantic.astype(np.int64)
        stuff = (gt >= NUM_THINGS) & (gt < 255)
        correct += int((clf.predict(s.image)[stuff] == gt[stuff]).sum())
        total += int(stuff.sum())
    assert total > 100_000
    assert correct / total < 0.40


def test_no_outline_cue(val_samples):
    """No border is drawn: the 1 px ring inside a shape is as bright as the ring just inside it
    (median ratio 1.00 for things and distractors; version 1's dark outline gave 0.45), and the
    gradient magnitude along thing borders matches that along distractor and stuff/stuff borders
    (measured ratios 0.97 and 0.90)."""

    def ring_ratio(gray, mask):
        e = cv2.erode(mask.astype(np.uint8), _KERNEL).astype(bool)
        e2 = cv2.erode(e.astype(np.uint8), _KERNEL).astype(bool)
        ring, inner = mask & ~e, e & ~e2
        if ring.sum() < 4 or inner.sum() < 4:
            return None
        return gray[ring].mean() / max(gray[inner].mean(), 1.0)

    ratios = {"thing": [], "distractor": []}
    grads = {"thing": [], "distractor": [], "stuff": []}
    for s in val_samples:
        gray = cv2.cvtColor(s.image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        mag = _gradient(s.image)
        thing_band = np.zeros(gray.shape, bool)
        for seg in _things(s):
            thing_band |= _band(seg["mask"])
            ratios["thing"].append(ring_ratio(gray, seg["mask"]))
        distractor_band = np.zeros(gray.shape, bool)
        for m in s.distractors:
            distractor_band |= _band(m)
            ratios["distractor"].append(ring_ratio(gray, m))
        grads["thing"].append(mag[thing_band])
        grads["distractor"].append(mag[distractor_band & ~thing_band])
        grads["stuff"].append(mag[s.semantic == 255])
    for kind, values in ratios.items():
        values = [v for v in values if v is not None]
        assert len(values) >= 20, kind
        assert 0.9 < np.median(values) < 1.1, (kind, np.median(values))
    mean = {k: float(np.concatenate(v).mean()) for k, v in grads.items()}
    assert 0.8 < mean["thing"] / mean["distractor"] < 1.25, mean
    assert 0.8 < mean["thing"] / mean["stuff"] < 1.25, mean


def test_distractors_exist_and_are_labelled_as_stuff(val_samples):
    n = 0
    for s in val_samples:
        stuff_ids = {seg["id"] for seg in s.segments if seg["category_id"] > 100}
        for m in s.distractors:
            assert m.any()
            n += 1
            labels = set(np.unique(s.semantic[m]).tolist())
            assert labels <= set(range(NUM_THINGS, NUM_THINGS + 4)) | {255}, labels
            assert set(np.unique(s.panoptic[m]).tolist()) <= stuff_ids | {0}
    assert n >= 30  # 0-3 per image


def test_sizes_counts_occlusion_and_touching(val_samples):
    diameters, visible, per_image, touching = [], [], [], 0
    for s in val_samples:
        things = _things(s)
        per_image.append(len(things))
        for seg in things:
            diameters.append(seg["diameter"] / SIZE)
            visible.append(seg["mask"].sum() / seg["full_area"])
        for a in range(len(things)):
            grown = cv2.dilate(things[a]["mask"].astype(np.uint8), _KERNEL).astype(bool)
            touching += sum(bool((grown & things[b]["mask"]).any())
                            for b in range(a + 1, len(things)))
    diameters, visible = np.array(diameters), np.array(visible)
    assert SIZE_RANGE[0] <= diameters.min() < 0.06 and 0.30 < diameters.max() <= SIZE_RANGE[1]
    assert (diameters < 0.1).sum() >= 10 and (diameters > 0.25).sum() >= 10
    assert min(per_image) >= 1 and max(per_image) == 8 and np.mean(per_image) > 4
    assert visible.min() >= 1 - MAX_OCCLUSION - 1e-9
    assert (visible < 0.6).sum() >= 5  # heavily occluded things occur
    assert touching >= 20


def test_render_is_deterministic_and_depends_on_seed_and_index():
    a, b = render_sample(5, SIZE, seed=3), render_sample(5, SIZE, seed=3)
    for field in ("image", "panoptic", "semantic"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert len(a.distractors) == len(b.distractors)
    for ma, mb in zip(a.distractors, b.distractors):
        np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a.image, render_sample(6, SIZE, seed=3).image)
    assert not np.array_equal(a.image, render_sample(5, SIZE, seed=4).image)
    with pytest.raises(ValueError, match="image_size"):
        render_sample(0, 32)
