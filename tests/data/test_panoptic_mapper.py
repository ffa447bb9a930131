"""knet_d2.data.dataset_mappers.panoptic_mapper (knet_panoptic): real COCO panoptic samples +
hand-built data (tests/helpers/mapper_samples.py, the fake_pan fixture of conftest.py)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets import register_coco_panoptic
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from knet_d2.data.dataset_mappers import KNetPanopticDatasetMapper, build_knet_train_mapper
from knet_d2.data.dataset_mappers.base import mask_boxes
from tests.helpers.mapper_samples import (
    NS,
    NT,
    SEGMENTS,
    H,
    W,
    check_output_types,
    make_cfg,
    write_image,
    write_pan,
)


# ----------------------------------------------------------------------------- helpers
def pan_mapper(augs: Sequence = (), nt: int = NT, ns: int = NS, fmt: str = "RGB"):
    return KNetPanopticDatasetMapper(
        is_train=True, augmentations=list(augs), image_format=fmt,
        num_thing_classes=nt, num_stuff_classes=ns,
    )


def expected_targets(ids: np.ndarray):
    """Classes and masks in the documented order, and the sem_seg map, computed naively."""
    classes = [1, 0, 3, 4]
    masks = [ids == 5, ids == 7, ids == 13, (ids == 11) | (ids == 12)]
    sem = np.full(ids.shape, 255, np.int64)
    for sid, c in [(5, 1), (7, 0), (11, 4), (12, 4), (13, 3)]:
        sem[ids == sid] = c
    return classes, masks, sem


# ----------------------------------------------------------------------------- panoptic, fake
def test_panoptic_exact_without_augmentation(fake_pan):
    d, img, ids = fake_pan
    # via the config: resize to the image's own size and no flip = identity
    mapper = build_knet_train_mapper(make_cfg(MIN_SIZE_TRAIN=(H,), RANDOM_FLIP="none"))
    out = mapper(d)
    check_output_types(out, H, W)
    classes, masks, sem = expected_targets(ids)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == classes  # things (JSON order), stuff sorted; crowd gone
    np.testing.assert_array_equal(inst.gt_masks.tensor.numpy(), np.stack(masks))
    np.testing.assert_array_equal(out["sem_seg"].numpy(), sem)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), img)
    assert inst.gt_boxes.tensor[0].tolist() == [2, 2, 8, 6]  # thing 5: rows 2..5, cols 2..7
    assert (out["file_name"], out["image_id"], out["height"], out["width"]) == (
        d["file_name"], 42, H, W)
    assert "segments_info" not in out
    assert d["segments_info"] == SEGMENTS  # input dict untouched (deep copy)


def test_panoptic_order_independent_of_json_order(fake_pan):
    d, _, ids = fake_pan
    d["segments_info"] = d["segments_info"][::-1]  # stuff listed before things
    out = pan_mapper()(d)
    assert out["instances"].gt_classes.tolist() == [0, 1, 3, 4]  # things (JSON order), stuff
    exp = np.stack([ids == 7, ids == 5, ids == 13, (ids == 11) | (ids == 12)])
    np.testing.assert_array_equal(out["instances"].gt_masks.tensor.numpy(), exp)


def test_panoptic_bgr_format(fake_pan):
    d, img, _ = fake_pan
    out = pan_mapper(fmt="BGR")(d)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), img[:, :, ::-1])


def test_panoptic_flip(fake_pan):
    d, img, ids = fake_pan
    out = pan_mapper([T.RandomFlip(prob=1.0)])(d)
    classes, masks, sem = expected_targets(ids[:, ::-1])
    assert out["instances"].gt_classes.tolist() == classes
    np.testing.assert_array_equal(out["instances"].gt_masks.tensor.numpy(), np.stack(masks))
    np.testing.assert_array_equal(out["sem_seg"].numpy(), sem)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), img[:, ::-1])
    # thing 5 moved from cols 2..7 to cols 22..27
    assert out["instances"].gt_boxes.tensor[0].tolist() == [22, 2, 28, 6]


def test_panoptic_resize(fake_pan):
    d, _, ids = fake_pan
    out = build_knet_train_mapper(make_cfg(MIN_SIZE_TRAIN=(40,), RANDOM_FLIP="none"))(d)
    check_output_types(out, 40, 60)
    up = ids.repeat(2, axis=0).repeat(2, axis=1)  # exact 2x nearest upsampling
    classes, masks, sem = expected_targets(up)
    assert out["instances"].gt_classes.tolist() == classes
    np.testing.assert_array_equal(out["instances"].gt_masks.tensor.numpy(), np.stack(masks))
    np.testing.assert_array_equal(out["sem_seg"].numpy(), sem)
    assert (out["height"], out["width"]) == (H, W)  # original size for the output resize


def test_panoptic_segment_cropped_away_is_dropped(fake_pan):
    d, _, ids = fake_pan
    out = pan_mapper([T.CropTransform(0, 0, 20, H)])(d)  # keep the left 20 columns
    check_output_types(out, H, 20)
    # thing 7 (cols 22..27) disappears; no error although it is listed
    assert out["instances"].gt_classes.tolist() == [1, 3, 4]
    np.testing.assert_array_equal(out["instances"].gt_masks.tensor[0].numpy(), ids[:, :20] == 5)


@pytest.mark.parametrize("segments", [[], [SEGMENTS[2]]], ids=["none", "crowd_only"])
def test_panoptic_no_targets(fake_pan, segments):
    d, _, _ = fake_pan
    d["segments_info"] = [dict(s) for s in segments]
    out = pan_mapper()(d)
    check_output_types(out, H, W)
    assert len(out["instances"]) == 0
    assert tuple(out["instances"].gt_masks.tensor.shape) == (0, H, W)
    assert (out["sem_seg"] == 255).all()


def test_panoptic_isthing_inferred_when_absent(fake_pan):
    d, _, ids = fake_pan
    for s in d["segments_info"]:
        del s["isthing"]
    classes, masks, _ = expected_targets(ids)
    out = pan_mapper()(d)
    assert out["instances"].gt_classes.tolist() == classes


def test_panoptic_bad_inputs(fake_pan, tmp_path):
    d, _, _ = fake_pan
    m = pan_mapper()
    missing = dict(d, pan_seg_file_name=str(tmp_path / "nope.png"))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        m(missing)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        m(dict(d, file_name=str(tmp_path / "nope.jpg")))
    with pytest.raises(KeyError, match="pan_seg_file_name"):
        m({k: v for k, v in d.items() if k != "pan_seg_file_name"})

    absent = dict(d, segments_info=d["segments_info"] + [
        {"id": 1234, "category_id": 0, "isthing": True, "iscrowd": 0}])
    with pytest.raises(ValueError, match=r"pan\.png.*segment id 1234.*absent"):
        m(absent)
    out_of_range = dict(d, segments_info=[{"id": 5, "category_id": 5, "isthing": False}])
    with pytest.raises(ValueError, match=r"pan\.png.*category_id 5.*outside"):
        m(out_of_range)
    stuff_as_thing = dict(d, segments_info=[{"id": 11, "category_id": 4, "isthing": True}])
    with pytest.raises(ValueError, match="things at 0..2 and stuff at 3..4"):
        m(stuff_as_thing)
    dup = dict(d, segments_info=[SEGMENTS[0], SEGMENTS[0]])
    with pytest.raises(ValueError, match="listed twice"):
        m(dup)

    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match=r"grey\.png.*mode 'L'"):
        m(dict(d, pan_seg_file_name=str(tmp_path / "grey.png")))
    write_pan(tmp_path / "small.png", np.zeros((H, W - 1), np.int64))
    with pytest.raises(ValueError, match=r"small\.png.*size"):
        m(dict(d, pan_seg_file_name=str(tmp_path / "small.png")))


# ----------------------------------------------------------------------------- panoptic, real
@pytest.fixture(scope="module")
def coco_panoptic_dicts(shared_data):
    root = shared_data / "coco_panoptic_sample"
    name = "knet_test_coco_panoptic_sample"
    if name not in DatasetCatalog.list():
        register_coco_panoptic(
            name, _get_builtin_metadata("coco_panoptic_standard"), str(root / "input_images"),
            str(root / "panoptic_examples"), str(root / "panoptic_examples.json"),
        )
    return DatasetCatalog.get(name)


def test_panoptic_real_sample_exact(coco_panoptic_dicts):
    # D2's loader gives contiguous ids + isthing; COCO: 80 things then 53 stuff
    mapper = pan_mapper(nt=80, ns=53)
    for d in coco_panoptic_dicts:
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"])))
        out = mapper(d)
        h, w = ids.shape
        check_output_types(out, h, w)
        segs = [s for s in d["segments_info"] if not s["iscrowd"]]
        things = [s for s in segs if s["isthing"]]
        stuff = sorted({s["category_id"] for s in segs if not s["isthing"]})
        cls = out["instances"].gt_classes.tolist()
        assert cls == [s["category_id"] for s in things] + stuff
        assert all(c < 80 for c in cls[: len(things)]) and all(c >= 80 for c in cls[len(things):])
        got = out["instances"].gt_masks.tensor.numpy()
        for i, s in enumerate(things):
            np.testing.assert_array_equal(got[i], ids == s["id"])
        for j, c in enumerate(stuff):
            ref = np.isin(ids, [s["id"] for s in segs if s["category_id"] == c])
            np.testing.assert_array_equal(got[len(things) + j], ref)
        crowd = np.isin(ids, [s["id"] for s in d["segments_info"] if s["iscrowd"]])
        assert crowd.any() and (out["sem_seg"].numpy()[crowd] == 255).all()
        assert (out["sem_seg"].numpy()[ids == 0] == 255).all()
        assert not (got.sum(0) > 1).any()
    meta = MetadataCatalog.get("knet_test_coco_panoptic_sample")
    assert meta.evaluator_type == "coco_panoptic_seg"


def test_panoptic_real_sample_ms_range(coco_panoptic_dicts):
    cfg = make_cfg(MIN_SIZE_TRAIN=(640, 800), MIN_SIZE_TRAIN_SAMPLING="range")
    cfg.MODEL.KNET.NUM_THING_CLASSES, cfg.MODEL.KNET.NUM_STUFF_CLASSES = 80, 53
    mapper = build_knet_train_mapper(cfg)
    d = coco_panoptic_dicts[1]
    for _ in range(2):
        out = mapper(d)
        _, h, w = out["image"].shape
        assert 640 <= min(h, w) <= 800 and max(h, w) <= 1333
        check_output_types(out, h, w)
        assert len(out["instances"]) == 30  # 32 segments - 2 crowd (no stuff class repeats)
        union = out["instances"].gt_masks.tensor.any(0)
        assert torch.equal(union, out["sem_seg"] != 255)


# ----------------------------------------------------------------------------- property test
@st.composite
def panoptic_cases(draw):
    h, w = draw(st.integers(2, 14)), draw(st.integers(2, 14))
    n = draw(st.integers(0, min(7, h * w)))
    ids = draw(st.lists(st.integers(1, 2**24 - 1), min_size=n, max_size=n, unique=True))
    segs = []
    for sid in ids:
        cat = draw(st.integers(0, NT + NS - 1))
        segs.append({"id": sid, "category_id": cat, "isthing": cat < NT,
                     "iscrowd": int(draw(st.integers(0, 3)) == 0)})
    seed = draw(st.integers(0, 2**31 - 1))
    short = draw(st.integers(1, 30))
    flip = draw(st.booleans())
    return h, w, segs, seed, short, flip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=panoptic_cases())
def test_panoptic_property(case):
    h, w, segs, seed, short, flip = case
    rng = np.random.default_rng(seed)
    # pixel labels: listed segments, void (0) and an unlisted id (void too)
    palette = np.array([s["id"] for s in segs] + [0, 2**24 - 1 if segs else 0], np.int64)
    ids = palette[rng.integers(0, len(palette), (h, w))]
    for k, s in enumerate(segs):  # every listed segment present at least once
        ids.flat[k] = s["id"]
    with tempfile.TemporaryDirectory() as tmp:
        write_image(Path(tmp) / "img.png", h, w, seed=1)
        write_pan(Path(tmp) / "pan.png", ids)
        d = {"file_name": str(Path(tmp) / "img.png"),
             "pan_seg_file_name": str(Path(tmp) / "pan.png"),
             "segments_info": json.loads(json.dumps(segs))}
        augs = [T.ResizeShortestEdge(short, 10_000), T.RandomFlip(prob=1.0 if flip else 0.0)]
        out = pan_mapper(augs)(d)

    _, oh, ow = out["image"].shape
    check_output_types(out, oh, ow)
    # the reference id map: the same nearest resize (+ flip) applied independently
    ref = np.asarray(Image.fromarray(id2rgb(ids).astype(np.uint8)).resize((ow, oh),
                                                                          Image.NEAREST))
    ref = rgb2id(ref[:, ::-1] if flip else ref)

    inst = out["instances"]
    masks, cls = inst.gt_masks.tensor.numpy(), inst.gt_classes.numpy()
    assert masks.reshape(len(masks), oh * ow).any(1).all()  # each mask non-empty
    assert (masks.sum(0) <= 1).all()  # disjoint
    assert ((cls >= 0) & (cls < NT + NS)).all()
    n_things = int((cls < NT).sum())
    assert (cls[:n_things] < NT).all()  # things first ...
    stuff = cls[n_things:].tolist()
    assert stuff == sorted(set(stuff))  # ... then one mask per stuff class
    targets = [s for s in segs if not s["iscrowd"]]
    valid = np.isin(ref, [s["id"] for s in targets])
    np.testing.assert_array_equal(masks.any(0), valid)  # union = non-void non-crowd pixels
    sem = np.full((oh, ow), 255, np.int64)
    for s in targets:
        sem[ref == s["id"]] = s["category_id"]
    np.testing.assert_array_equal(out["sem_seg"].numpy(), sem)
    for m, c in zip(masks, cls):
        assert (sem[m] == c).all()
    thing_ids = [s["id"] for s in targets if s["isthing"] and (ref == s["id"]).any()]
    for m, sid in zip(masks[:n_things], thing_ids):
        np.testing.assert_array_equal(m, ref == sid)
    np.testing.assert_array_equal(inst.gt_boxes.tensor.numpy(), mask_boxes(masks))
