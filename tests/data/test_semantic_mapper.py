"""knet_d2.data.dataset_mappers.semantic_mapper (knet_semantic): the mmseg ratio resize, the
mapper from a config (crop, padding, evaluation mode) and a property test on random label maps."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from detectron2.data import transforms as T
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from knet_d2.data.dataset_mappers import MAPPER_REGISTRY, build_knet_train_mapper
from knet_d2.data.dataset_mappers.semantic_mapper import (
    KNetSemanticDatasetMapper,
    RandomRatioResize,
)
from tests.helpers.mapper_samples import write_image
from tests.helpers.tiny_semantic import tiny_cfg


def test_random_ratio_resize_matches_mmseg_rule():
    aug = RandomRatioResize(512, 2048, (1.0, 1.0))
    t = aug.get_transform(np.zeros((300, 1000, 3), np.uint8))
    assert (t.new_h, t.new_w) == (512, 1707)  # short side limited
    t = aug.get_transform(np.zeros((100, 1000, 3), np.uint8))
    assert (t.new_h, t.new_w) == (205, 2048)  # long side limited (panorama)
    aug = RandomRatioResize(512, 2048, (0.5, 2.0))
    np.random.seed(0)
    shorts = [min(aug.get_transform(np.zeros((400, 600, 3), np.uint8)).new_h, 10**9)
              for _ in range(200)]
    assert 256 <= min(shorts) < 320 and 960 < max(shorts) <= 1024


def _write_sem_sample(tmp_path: Path, h: int = 60, w: int = 90) -> dict:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lab = np.zeros((h, w), np.uint8)
    lab[:, w // 3:] = 1
    lab[h // 2:, :] = 2
    lab[:5] = 255
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(lab).save(tmp_path / "a_gt.png")
    return {"file_name": str(tmp_path / "a.png"), "sem_seg_file_name": str(tmp_path / "a_gt.png"),
            "height": h, "width": w}


def test_semantic_mapper_registered_and_pads(tmp_path):
    assert MAPPER_REGISTRY["knet_semantic"] is KNetSemanticDatasetMapper
    cfg = tiny_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "knet_semantic"
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 256
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = True, "absolute", (96, 96)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    cfg.INPUT.COLOR_AUG_SSD = True
    mapper = build_knet_train_mapper(cfg)
    assert isinstance(mapper, KNetSemanticDatasetMapper)
    names = [type(a).__name__ for a in mapper.augmentations.augs]
    assert names[:3] == ["RandomRatioResize", "RandomCrop_CategoryAreaConstraint", "RandomFlip"]
    d = _write_sem_sample(tmp_path)
    np.random.seed(1)
    seen_pad = False
    for _ in range(10):
        out = mapper(d)
        img, seg = out["image"], out["sem_seg"]
        assert img.dtype == torch.uint8 and img.shape == (3, 96, 96)
        assert seg.dtype == torch.int64 and seg.shape == (96, 96)
        assert set(seg.unique().tolist()) <= {0, 1, 2, 255}
        pad_rows = (seg == 255).all(1)
        if pad_rows[-1]:  # the bottom rows are padding: image = rounded pixel mean there
            seen_pad = True
            assert (img[:, -1, 0] == torch.tensor([124, 116, 104], dtype=torch.uint8)).all()
    assert seen_pad  # resized heights 32..128 < 96 happen with seed 1


def test_semantic_mapper_eval_mode(tmp_path):
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 120, 400
    mapper = KNetSemanticDatasetMapper(cfg, is_train=False)
    out = mapper(_write_sem_sample(tmp_path))
    assert out["image"].shape == (3, 120, 180) and "sem_seg" not in out
    assert "sem_seg_file_name" not in out


# ----------------------------------------------------------------------------- property test
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(2, 16), w=st.integers(2, 16), seed=st.integers(0, 2**31 - 1),
    short=st.integers(1, 24), flip=st.booleans(), crop=st.sampled_from([0, 3, 8]),
    pad=st.sampled_from([None, 10]), bits16=st.booleans(),
)
def test_semantic_property(h, w, seed, short, flip, crop, pad, bits16):
    from detectron2.data.transforms import RandomCrop_CategoryAreaConstraint

    from knet_d2.data.dataset_mappers import KNetSemanticDatasetMapper

    k, ignore = 5, 255
    values = np.array([0, 1, 2, 3, 4, ignore])
    lab = values[np.random.default_rng(seed).integers(0, len(values), (h, w))]
    lab = lab.astype(np.uint16 if bits16 else np.uint8)
    augs = [T.ResizeShortestEdge(short, 10_000)]
    if crop:
        augs.append(RandomCrop_CategoryAreaConstraint("absolute", (crop, crop), 0.75, ignore))
    augs.append(T.RandomFlip(prob=1.0 if flip else 0.0))
    mapper = KNetSemanticDatasetMapper(
        is_train=True, augmentations=augs, image_format="RGB", num_classes=k,
        ignore_label=ignore, pad_size=None if pad is None else (pad, pad),
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_image(Path(tmp) / "img.png", h, w, seed=3)
        Image.fromarray(lab).save(Path(tmp) / "lab.png")
        out = mapper({"file_name": str(Path(tmp) / "img.png"),
                      "sem_seg_file_name": str(Path(tmp) / "lab.png")})
    img, sem = out["image"], out["sem_seg"]
    assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3
    assert sem.dtype == torch.int64 and tuple(sem.shape) == tuple(img.shape[1:])
    assert set(sem.unique().tolist()) <= set(np.unique(lab).tolist()) | {ignore}
    if pad is not None:
        assert min(sem.shape) >= pad
    if not crop and pad is None:  # exact: nearest resize (+ flip) of the label map
        oh, ow = sem.shape
        if bits16:  # D2 resizes non-uint8 maps with torch's (legacy) "nearest"
            ref = torch.nn.functional.interpolate(
                torch.as_tensor(lab.astype(np.float32))[None, None], (oh, ow), mode="nearest"
            )[0, 0].numpy()
        else:
            ref = np.asarray(Image.fromarray(lab).resize((ow, oh), Image.NEAREST))
        np.testing.assert_array_equal(sem.numpy(), ref[:, ::-1] if flip else ref)
