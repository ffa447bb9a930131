"""Training dataset mappers (knet_panoptic, knet_instance): real COCO samples + hand-built data."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets import load_coco_json, register_coco_panoptic
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.structures import BitMasks, BoxMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from knet_d2 import add_knet_config
from knet_d2.data.dataset_mappers import (
    MAPPER_REGISTRY,
    KNetInstanceDatasetMapper,
    KNetPanopticDatasetMapper,
    build_knet_train_mapper,
    register_mapper,
)
from knet_d2.data.dataset_mappers.base import mask_boxes

NT, NS = 3, 2  # class layout of the hand-built data: things 0..2, stuff 3..4


# ----------------------------------------------------------------------------- helpers
def make_cfg(mapper: str = "knet_panoptic", **input_opts):
    cfg = get_cfg()
    add_knet_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.MODEL.KNET.NUM_THING_CLASSES = NT
    cfg.MODEL.KNET.NUM_STUFF_CLASSES = NS
    cfg.INPUT.FORMAT = "RGB"  # as in configs/coco/Base-KNet-R50.yaml
    for k, v in input_opts.items():
        setattr(cfg.INPUT, k, v)
    return cfg


def pan_mapper(augs: Sequence = (), nt: int = NT, ns: int = NS, fmt: str = "RGB"):
    return KNetPanopticDatasetMapper(
        is_train=True, augmentations=list(augs), image_format=fmt,
        num_thing_classes=nt, num_stuff_classes=ns,
    )


def inst_mapper(augs: Sequence = (), nt: int = NT):
    return KNetInstanceDatasetMapper(
        is_train=True, augmentations=list(augs), image_format="RGB", num_thing_classes=nt,
    )


def write_image(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(path)  # PNG: lossless, so pixels can be compared exactly
    return img


def write_pan(path: Path, ids: np.ndarray) -> None:
    Image.fromarray(id2rgb(ids).astype(np.uint8)).save(path)


# A 20x30 panoptic map. Things: 5 (cat 1), 7 (cat 0), 9 (cat 2, crowd). Stuff: 11 and 12 share
# stuff class 4 (to be merged), 13 is class 3. 0 = void, 99 = unlisted (also void).
H, W = 20, 30
SEGMENTS = [
    {"id": 5, "category_id": 1, "isthing": True, "iscrowd": 0},
    {"id": 7, "category_id": 0, "isthing": True, "iscrowd": 0},
    {"id": 9, "category_id": 2, "isthing": True, "iscrowd": 1},
    {"id": 11, "category_id": 4, "isthing": False, "iscrowd": 0},
    {"id": 12, "category_id": 4, "isthing": False, "iscrowd": 0},
    {"id": 13, "category_id": 3, "isthing": False, "iscrowd": 0},
]


def fake_ids() -> np.ndarray:
    ids = np.zeros((H, W), np.int64)
    ids[:10, :10] = 11
    ids[10:, :10] = 13
    ids[:, 10:20] = 12
    ids[2:6, 2:8] = 5      # thing on top of stuff 11, left side only
    ids[12:18, 22:28] = 7  # right side only
    ids[0:4, 24:30] = 9    # crowd
    ids[15:20, 12:14] = 99  # unlisted id -> void
    return ids          # the rest of columns 20..29 stays 0 (void)


@pytest.fixture
def fake_pan(tmp_path):
    img = write_image(tmp_path / "img.png", H, W)
    ids = fake_ids()
    write_pan(tmp_path / "pan.png", ids)
    d = {
        "file_name": str(tmp_path / "img.png"), "pan_seg_file_name": str(tmp_path / "pan.png"),
        "height": H, "width": W, "image_id": 42, "segments_info": [dict(s) for s in SEGMENTS],
    }
    return d, img, ids


def expected_targets(ids: np.ndarray):
    """Classes and masks in the documented order, and the sem_seg map, computed naively."""
    classes = [1, 0, 3, 4]
    masks = [ids == 5, ids == 7, ids == 13, (ids == 11) | (ids == 12)]
    sem = np.full(ids.shape, 255, np.int64)
    for sid, c in [(5, 1), (7, 0), (11, 4), (12, 4), (13, 3)]:
        sem[ids == sid] = c
    return classes, masks, sem


def check_output_types(out: dict, h: int, w: int) -> None:
    inst = out["instances"]
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, h, w)
    assert inst.image_size == (h, w)
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.ndim == 1
    assert isinstance(inst.gt_masks, BitMasks)
    assert inst.gt_masks.tensor.dtype == torch.bool
    assert tuple(inst.gt_masks.tensor.shape) == (len(inst), h, w)
    assert tuple(inst.gt_boxes.tensor.shape) == (len(inst), 4)
    if "sem_seg" in out:
        assert out["sem_seg"].dtype == torch.int64 and tuple(out["sem_seg"].shape) == (h, w)


# ----------------------------------------------------------------------------- registry
def test_registry_and_builder():
    assert MAPPER_REGISTRY["knet_panoptic"] is KNetPanopticDatasetMapper
    assert MAPPER_REGISTRY["knet_instance"] is KNetInstanceDatasetMapper
    assert isinstance(build_knet_train_mapper(make_cfg("knet_panoptic")), KNetPanopticDatasetMapper)
    m = build_knet_train_mapper(make_cfg("knet_instance"))
    assert isinstance(m, KNetInstanceDatasetMapper) and m.is_train
    with pytest.raises(KeyError, match="knet_instance.*knet_panoptic"):
        build_knet_train_mapper(make_cfg("no_such_mapper"))
    with pytest.raises(KeyError, match="already registered"):
        register_mapper("knet_panoptic")(type("Other", (), {}))
    assert register_mapper("knet_panoptic")(KNetPanopticDatasetMapper) is KNetPanopticDatasetMapper


def test_augmentations_from_config():
    augs = build_knet_train_mapper(
        make_cfg(MIN_SIZE_TRAIN=(640, 800), MIN_SIZE_TRAIN_SAMPLING="range")
    ).augmentations.augs
    assert [type(a) for a in augs] == [T.ResizeShortestEdge, T.RandomFlip]
    assert tuple(augs[0].short_edge_length) == (640, 800) and augs[0].is_range
    assert augs[0].max_size == 1333 and augs[1].horizontal
    cfg = make_cfg(RANDOM_FLIP="none")
    cfg.INPUT.CROP.ENABLED = True
    augs = build_knet_train_mapper(cfg).augmentations.augs
    assert [type(a) for a in augs] == [T.RandomCrop, T.ResizeShortestEdge]


def test_mask_boxes_match_bitmasks():
    rng = np.random.default_rng(0)
    m = rng.random((5, 9, 11)) > 0.8
    m[2] = False
    ref = BitMasks(torch.as_tensor(m)).get_bounding_boxes().tensor.numpy()
    np.testing.assert_array_equal(mask_boxes(m), ref)


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


def test_eval_mode_drops_annotations(fake_pan):
    d, _, _ = fake_pan
    cfg = make_cfg(MIN_SIZE_TEST=40, MAX_SIZE_TEST=1000)
    for cls in (KNetPanopticDatasetMapper, KNetInstanceDatasetMapper):
        out = cls(cfg, is_train=False)(dict(d, annotations=[]))
        assert tuple(out["image"].shape) == (3, 40, 60)
        assert not {"instances", "sem_seg", "segments_info", "annotations",
                    "pan_seg_file_name"} & set(out)
        assert (out["height"], out["width"], out["image_id"]) == (H, W, 42)


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


# ----------------------------------------------------------------------------- instance
@pytest.fixture(scope="module")
def coco_tiny_dicts(shared_data):
    root = shared_data / "coco_tiny"
    return load_coco_json(
        str(root / "annotations" / "instances_val2017.json"), str(root / "val2017"),
        "knet_test_coco_tiny_val",
    )


def test_instance_real_sample(coco_tiny_dicts):
    with_crowd = [d for d in coco_tiny_dicts if any(a["iscrowd"] for a in d["annotations"])]
    mapper = inst_mapper(nt=80)
    for d in with_crowd[:2] + coco_tiny_dicts[:2]:
        out = mapper(d)
        h, w = d["height"], d["width"]
        check_output_types(out, h, w)
        annos = [a for a in d["annotations"] if not a["iscrowd"]]
        inst = out["instances"]
        assert inst.gt_classes.tolist() == [a["category_id"] for a in annos]
        for a, m in zip(annos, inst.gt_masks.tensor.numpy()):
            rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))
            np.testing.assert_array_equal(m, mask_util.decode(rle).astype(bool))
        boxes = inst.gt_boxes.tensor.numpy()  # tight mask boxes ~ COCO boxes
        ref = BoxMode.convert(np.array([a["bbox"] for a in annos]), BoxMode.XYWH_ABS,
                              BoxMode.XYXY_ABS)
        assert np.abs(boxes - ref).max() <= 3.0
        assert "annotations" not in out


def test_instance_real_sample_flip_resize(coco_tiny_dicts):
    d = coco_tiny_dicts[0]
    ref = inst_mapper(nt=80)(d)["instances"]
    out = inst_mapper([T.RandomFlip(prob=1.0)], nt=80)(d)["instances"]
    # polygons are flipped then rasterised: equal to the flipped mask up to boundary pixels
    assert out.gt_classes.tolist() == ref.gt_classes.tolist()
    a, b = out.gt_masks.tensor, ref.gt_masks.tensor.flip(-1)
    iou = (a & b).sum((1, 2)) / (a | b).sum((1, 2))
    assert (iou[b.sum((1, 2)) >= 100] > 0.8).all()
    w = d["width"]
    flipped_ref = ref.gt_boxes.tensor[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + \
        torch.tensor([w, 0, w, 0])
    assert (out.gt_boxes.tensor - flipped_ref).abs().max() <= 1.0
    cfg = make_cfg("knet_instance", MIN_SIZE_TRAIN=(200,), RANDOM_FLIP="none")
    cfg.MODEL.KNET.NUM_THING_CLASSES = 80
    out = build_knet_train_mapper(cfg)(d)
    _, h, w = out["image"].shape
    assert min(h, w) == 200
    check_output_types(out, h, w)


def _inst_dict(tmp_path: Path, annotations: List[dict]) -> dict:
    write_image(tmp_path / "img.png", H, W)
    return {"file_name": str(tmp_path / "img.png"), "height": H, "width": W, "image_id": 1,
            "annotations": annotations}


def _poly_anno(cat: int, polys, **kw) -> dict:
    return {"category_id": cat, "segmentation": polys, "iscrowd": 0,
            "bbox": [0, 0, 1, 1], "bbox_mode": BoxMode.XYWH_ABS, **kw}


SQUARE = [2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]  # x in [2,12], y in [2,8]


def test_instance_fake_formats_and_flip(tmp_path):
    rle_mask = np.zeros((H, W), np.uint8)
    rle_mask[10:15, 20:28] = 1
    uncompressed = {"size": [H, W], "counts": []}
    flat = rle_mask.flatten(order="F")  # column-major run lengths, starting with zeros
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    uncompressed["counts"] = runs
    array_mask = np.zeros((H, W), bool)
    array_mask[0:3, 0:3] = True
    annos = [
        _poly_anno(0, [SQUARE]),
        {"category_id": 1, "segmentation": mask_util.encode(np.asfortranarray(rle_mask)),
         "iscrowd": 0, "bbox": [20, 10, 8, 5], "bbox_mode": BoxMode.XYWH_ABS},
        {"category_id": 2, "segmentation": uncompressed},  # no bbox: filled in
        {"category_id": 1, "segmentation": array_mask},
        _poly_anno(2, [SQUARE], iscrowd=1),
    ]
    d = _inst_dict(tmp_path, annos)
    out = inst_mapper()(d)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 2, 1]  # crowd dropped
    m = inst.gt_masks.tensor.numpy()
    np.testing.assert_array_equal(m[1], rle_mask.astype(bool))
    np.testing.assert_array_equal(m[2], rle_mask.astype(bool))
    np.testing.assert_array_equal(m[3], array_mask)
    assert m[0, 3:8, 3:12].all() and not m[0, 10:].any()
    assert inst.gt_boxes.tensor[1].tolist() == [20, 10, 28, 15]

    flipped = inst_mapper([T.RandomFlip(prob=1.0)])(d)["instances"]
    np.testing.assert_array_equal(flipped.gt_masks.tensor.numpy()[1:], m[1:, :, ::-1])
    assert flipped.gt_boxes.tensor[1].tolist() == [2, 10, 10, 15]


def test_instance_degenerate_polygons_skipped(tmp_path, caplog):
    annos = [
        _poly_anno(0, [[1.0, 1.0, 5.0, 5.0]]),            # 2 points only: skipped
        _poly_anno(1, [SQUARE, [3.0, 3.0, 4.0, 4.0]]),     # bad part dropped, square kept
        _poly_anno(2, []),                                  # no polygon at all
        {"category_id": 2, "iscrowd": 0},                   # no segmentation key
    ]
    d = _inst_dict(tmp_path, annos)
    with caplog.at_level(logging.WARNING):
        out = inst_mapper()(d)
    assert out["instances"].gt_classes.tolist() == [1]
    ref = inst_mapper()(_inst_dict(tmp_path, [_poly_anno(1, [SQUARE])]))
    assert torch.equal(out["instances"].gt_masks.tensor, ref["instances"].gt_masks.tensor)
    msgs = [r.getMessage() for r in caplog.records if "img.png" in r.getMessage()]
    assert sum("degenerate polygon" in s for s in msgs) == 2
    assert sum("no segmentation" in s for s in msgs) == 2


def test_instance_empty_and_crowd_only(tmp_path):
    for annos in ([], [_poly_anno(0, [SQUARE], iscrowd=1)]):
        out = inst_mapper()(_inst_dict(tmp_path, annos))
        check_output_types(out, H, W)
        assert len(out["instances"]) == 0
        assert tuple(out["instances"].gt_masks.tensor.shape) == (0, H, W)
    d = _inst_dict(tmp_path, [])
    del d["annotations"]
    assert len(inst_mapper()(d)["instances"]) == 0


def test_instance_mask_empty_after_crop_is_dropped(tmp_path):
    d = _inst_dict(tmp_path, [_poly_anno(0, [SQUARE]), _poly_anno(1, [[20, 10, 28, 10, 28, 15]])])
    out = inst_mapper([T.CropTransform(0, 0, 15, H)])(d)
    check_output_types(out, H, 15)
    assert out["instances"].gt_classes.tolist() == [0]


def test_instance_bad_inputs(tmp_path):
    m = inst_mapper()
    with pytest.raises(ValueError, match=r"img\.png.*category_id 3.*outside"):
        m(_inst_dict(tmp_path, [_poly_anno(3, [SQUARE])]))
    with pytest.raises(ValueError, match=r"img\.png.*category_id -1"):
        m(_inst_dict(tmp_path, [_poly_anno(-1, [SQUARE])]))
    bad_rle = mask_util.encode(np.asfortranarray(np.zeros((H + 1, W), np.uint8)))
    with pytest.raises(ValueError, match=r"img\.png.*RLE of size"):
        m(_inst_dict(tmp_path, [{"category_id": 0, "segmentation": bad_rle}]))
    with pytest.raises(ValueError, match=r"img\.png.*type str"):
        m(_inst_dict(tmp_path, [{"category_id": 0, "segmentation": "oops"}]))
    d = _inst_dict(tmp_path, [])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        m(dict(d, file_name=str(tmp_path / "missing.jpg")))


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


# ----------------------------------------------------------------------------- property tests:
# instance and semantic mappers (random annotations, including degenerate ones, never crash)
@st.composite
def instance_cases(draw):
    h, w = draw(st.integers(2, 16)), draw(st.integers(2, 16))
    annos = []
    for _ in range(draw(st.integers(0, 6))):
        cat, crowd = draw(st.integers(0, NT - 1)), int(draw(st.integers(0, 4)) == 0)
        if draw(st.booleans()):  # polygon(s): any point count, odd lengths, out-of-image points
            polys = []
            for _ in range(draw(st.integers(1, 2))):
                k = draw(st.integers(1, 6))
                xy = draw(st.lists(st.floats(-5, max(h, w) + 5, allow_nan=False),
                                   min_size=2 * k, max_size=2 * k))
                polys.append(xy[:-1] if draw(st.booleans()) and k > 1 else xy)
            segm = polys
        else:  # RLE of a random mask (may be empty)
            seed = draw(st.integers(0, 2**31 - 1))
            m = np.random.default_rng(seed).random((h, w)) > draw(st.sampled_from([0.3, 0.9, 1.0]))
            segm = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        annos.append({"category_id": cat, "iscrowd": crowd, "segmentation": segm})
    return h, w, annos, draw(st.integers(1, 24)), draw(st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=instance_cases())
def test_instance_property(case):
    h, w, annos, short, flip = case
    with tempfile.TemporaryDirectory() as tmp:
        write_image(Path(tmp) / "img.png", h, w, seed=2)
        d = {"file_name": str(Path(tmp) / "img.png"), "height": h, "width": w, "image_id": 3,
             "annotations": annos}
        augs = [T.ResizeShortestEdge(short, 10_000), T.RandomFlip(prob=1.0 if flip else 0.0)]
        logging.disable(logging.WARNING)  # degenerate polygons are logged
        try:
            out = inst_mapper(augs)(d)
        finally:
            logging.disable(logging.NOTSET)
    _, oh, ow = out["image"].shape
    check_output_types(out, oh, ow)
    inst = out["instances"]
    masks, cls = inst.gt_masks.tensor.numpy(), inst.gt_classes.tolist()
    assert masks.reshape(len(masks), oh * ow).any(1).all()  # no empty target

    def usable(a):
        s = a["segmentation"]
        return isinstance(s, dict) or any(len(p) >= 6 and len(p) % 2 == 0 for p in s)

    targets = [a for a in annos if not a["iscrowd"] and usable(a)]
    it = iter(a["category_id"] for a in targets)  # classes: an ordered subsequence
    assert all(c in it for c in cls)
    if all(isinstance(a["segmentation"], dict) for a in targets):  # RLE: exact nearest resize
        ref = []
        for a in targets:
            m = mask_util.decode(a["segmentation"])
            m = np.asarray(Image.fromarray(m).resize((ow, oh), Image.NEAREST)).astype(bool)
            if m.any():
                ref.append(m[:, ::-1] if flip else m)
        np.testing.assert_array_equal(masks, np.stack(ref) if ref else masks[:0])
    np.testing.assert_array_equal(inst.gt_boxes.tensor.numpy(), mask_boxes(masks))


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


def test_instance_flipped_rle_one_pixel_wide():
    """Regression (found by test_instance_property): a 2x2 image resized to 1x1 and flipped
    gave a negative-stride RLE mask that D2's annotations_to_instances could not stack."""
    with tempfile.TemporaryDirectory() as tmp:
        write_image(Path(tmp) / "img.png", 2, 2, seed=2)
        rle = {"size": [2, 2], "counts": b"013"}
        d = {"file_name": str(Path(tmp) / "img.png"), "height": 2, "width": 2, "image_id": 3,
             "annotations": [{"category_id": 0, "iscrowd": 0, "segmentation": dict(rle)},
                             {"category_id": 0, "iscrowd": 1, "segmentation": dict(rle)}]}
        out = inst_mapper([T.ResizeShortestEdge(1, 10_000), T.RandomFlip(prob=1.0)])(d)
    assert tuple(out["image"].shape) == (3, 1, 1)
    inst = out["instances"]
    ref = np.asarray(Image.fromarray(mask_util.decode(rle)).resize((1, 1), Image.NEAREST))
    assert inst.gt_masks.tensor.shape[1:] == (1, 1)
    assert len(inst) == int(ref.any()) and inst.gt_classes.tolist() == [0] * int(ref.any())
