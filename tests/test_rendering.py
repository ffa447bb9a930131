"""Tests of knet_d2/rendering.py: render_predictions, the renderer behind make quickstart.

One test runs a real, randomly initialised tiny K-Net when ``configs/synthetic/panoptic/*.yaml``
exists.
"""
from __future__ import annotations

import os

import cv2
import pytest
import torch

from knet_d2.rendering import render_predictions
from tests.helpers.fake_predictor import THINGS_FIRST, FakePredictor, dataset_cfg
from tests.helpers.paths import REPO_ROOT
from tests.helpers.photos import small_photo, write_image


def test_render_predictions_for_quickstart(tmp_path):
    names = ("astronaut", "coffee")
    imgs = [write_image(tmp_path / "in" / f"{n}.jpg", small_photo(which=n)) for n in names]
    cfg = dataset_cfg(THINGS_FIRST)
    written = render_predictions(
        cfg, None, imgs, tmp_path / "qs" / "demo", predictor=FakePredictor(cfg)
    )
    assert written == [tmp_path / "qs" / "demo" / "astronaut.jpg",
                       tmp_path / "qs" / "demo" / "coffee.jpg"]
    assert all(cv2.imread(str(p)).shape == (72, 96, 3) for p in written)
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\x00" * 100)
    with pytest.raises(RuntimeError, match="bad.jpg"):
        render_predictions(
            cfg, None, [tmp_path / "in" / "bad.jpg"], tmp_path / "qs2", predictor=FakePredictor(cfg)
        )


def test_real_tiny_knet_panoptic(tmp_path):
    """Demo pictures from a randomly initialised tiny K-Net (the quickstart path)."""
    configs = sorted((REPO_ROOT / "configs" / "synthetic" / "panoptic").glob("*.yaml"))
    assert configs, "no configs/synthetic/panoptic/*.yaml: nothing tiny to build"
    from tests.helpers.paths import load_config

    # random weights on purpose: MODEL.WEIGHTS_STRICT False lets inference run without a checkpoint
    cfg = load_config(
        configs[0], ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.WEIGHTS_STRICT", "False"]
    )
    torch.manual_seed(0)
    img = write_image(tmp_path / "astronaut.jpg", small_photo(96, 128))
    written = render_predictions(cfg, "", [img], tmp_path / "vis",
                                           confidence_threshold=0.0)
    assert written == [tmp_path / "vis" / "astronaut.jpg"]
    assert cv2.imread(str(written[0])).shape == (96, 128, 3)
    assert os.path.getsize(written[0]) > 0


