"""knet_d2.data.dataset_mappers.instance_mapper (knet_instance): real COCO samples + hand-built
data (tests/helpers/mapper_samples.py)."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from knet_d2.data.dataset_mappers import KNetInstanceDatasetMapper, build_knet_train_mapper
from knet_d2.data.dataset_mappers.base import mask_boxes
from tests.helpers.mapper_samples import NT, H, W, check_output_types, make_cfg, write_image


# ----------------------------------------------------------------------------- helpers
def inst_mapper(augs: Sequence = (), nt: int = NT):
    return KNetInstanceDatasetMapper(
        is_train=True, augmentations=list(augs), image_format="RGB", num_thing_classes=nt,
    )


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
# random annotations, including degenerate ones, never crash
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
