"""Bad and unusual inputs: each is either handled (output valid) or a clear error naming the file.

Covers the three training mappers (knet_panoptic, knet_instance, knet_semantic, built from the
real configs), the dataset loaders/registration, the demo's image reading and the skipping of
bad training samples. Every bad file is made with PIL in ``tmp_path``.
"""
from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.datasets import load_coco_json
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BitMasks, BoxMode
from detectron2.utils.events import EventStorage
from panopticapi.utils import id2rgb
from PIL import Image

from knet_d2.data.dataset_mappers import (
    KNetInstanceDatasetMapper,
    KNetPanopticDatasetMapper,
    KNetSemanticDatasetMapper,
    build_knet_train_mapper,
)
from knet_d2.data.datasets.register_custom import (
    register_instance_dataset,
    register_panoptic_dataset,
)
from knet_d2.data.image_io import ImageReadError, read_image, read_label_map
from knet_d2.data.skip_bad_samples import SkipBadSamples, TooManyBadSamplesError
from tests.helpers.paths import REPO_ROOT, load_config

CONFIGS = {
    "panoptic": "configs/coco/panoptic-segmentation/knet_R50_1x.yaml",
    "instance": "configs/coco/instance-segmentation/knet_R50_1x.yaml",
    "semantic": "configs/ade20k/semantic-segmentation/knet_fcn_R50_512x512_80k.yaml",
}
TASKS = tuple(CONFIGS)
THING, STUFF = 0, 80  # COCO panoptic contiguous ids: things 0..79, stuff 80..132
IGNORE = 255


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def mappers() -> Dict[str, object]:
    """The training mappers of the real COCO / ADE20K configs."""
    out = {}
    for task, path in CONFIGS.items():
        cfg = load_config(REPO_ROOT / path)
        cfg.INPUT.RANDOM_FLIP = "none"
        out[task] = build_knet_train_mapper(cfg)
    return out


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def square_ids(h: int, w: int) -> np.ndarray:
    """Panoptic ids: a thing (id 1) in the top-left quarter on stuff (id 2)."""
    ids = np.full((h, w), 2, np.int64)
    ids[: h // 2, : w // 2] = 1
    return ids


def sample(tmp_path: Path, task: str, image_file: Path, hw: Tuple[int, int], **extra) -> dict:
    """A dataset dict of ``task`` for ``image_file`` whose annotation is (H, W) = ``hw``."""
    h, w = hw
    d = {"file_name": str(image_file), "height": h, "width": w, "image_id": 7}
    stem = Path(image_file).stem
    if task == "panoptic":
        pan = tmp_path / f"{stem}_pan.png"
        Image.fromarray(id2rgb(square_ids(h, w)).astype(np.uint8)).save(pan)
        d["pan_seg_file_name"] = str(pan)
        d["segments_info"] = [
            {"id": 1, "category_id": THING, "isthing": True, "iscrowd": 0},
            {"id": 2, "category_id": STUFF, "isthing": False, "iscrowd": 0},
        ]
    elif task == "instance":
        x, y = w / 2, h / 2
        d["annotations"] = [{
            "category_id": THING, "iscrowd": 0, "bbox": [0, 0, x, y],
            "bbox_mode": BoxMode.XYWH_ABS, "segmentation": [[0, 0, x, 0, x, y, 0, y]],
        }]
    else:
        sem = tmp_path / f"{stem}_sem.png"
        lab = np.ones((h, w), np.uint8)
        lab[: h // 2, : w // 2] = 0
        Image.fromarray(lab).save(sem)
        d["sem_seg_file_name"] = str(sem)
    d.update(extra)
    return d


def check_valid(out: dict, task: str) -> Tuple[int, int]:
    """Assert the model-input contract; returns the output (H, W)."""
    img = out["image"]
    assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3
    h, w = img.shape[1:]
    if task in ("panoptic", "instance"):
        inst = out["instances"]
        assert inst.image_size == (h, w)
        assert isinstance(inst.gt_masks, BitMasks)
        masks = inst.gt_masks.tensor
        assert masks.dtype == torch.bool and tuple(masks.shape) == (len(inst), h, w)
        assert masks.flatten(1).any(1).all()  # no empty target
        ncls = 133 if task == "panoptic" else 80
        assert ((inst.gt_classes >= 0) & (inst.gt_classes < ncls)).all()
    if task in ("panoptic", "semantic"):
        sem = out["sem_seg"]
        assert sem.dtype == torch.int64 and tuple(sem.shape) == (h, w)
        ncls = 133 if task == "panoptic" else 150
        assert (((sem >= 0) & (sem < ncls)) | (sem == IGNORE)).all()
    return h, w


def identity_instance_mapper() -> KNetInstanceDatasetMapper:
    return KNetInstanceDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", num_thing_classes=80
    )


def identity_panoptic_mapper() -> KNetPanopticDatasetMapper:
    return KNetPanopticDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", num_thing_classes=80,
        num_stuff_classes=53,
    )


def identity_semantic_mapper(num_classes: int = 150) -> KNetSemanticDatasetMapper:
    return KNetSemanticDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", num_classes=num_classes
    )


def save_exif(path: Path, pixels: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif)


# ----------------------------------------------------------------------------- image modes
def _make_mode(tmp_path: Path, kind: str) -> Tuple[Path, np.ndarray]:
    """Write a 20x30 image of ``kind``; return it and the RGB array it must read as."""
    h, w = 20, 30
    base = rgb(h, w)
    if kind == "grayscale":
        p = tmp_path / "grey.png"
        Image.fromarray(base[:, :, 0]).save(p)
        return p, np.repeat(base[:, :, :1], 3, axis=2)
    if kind == "rgba":  # alpha is dropped (D2 behaviour), colour kept
        p = tmp_path / "rgba.png"
        Image.fromarray(np.dstack([base, base[:, :, 0]]), mode="RGBA").save(p)
        return p, base
    if kind == "palette":
        p = tmp_path / "pal.png"
        im = Image.fromarray(base).convert("P")
        im.save(p)
        return p, np.asarray(im.convert("RGB"))
    if kind == "16bit":
        p = tmp_path / "grey16.png"
        a16 = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 109 % 65536).astype(np.uint16)
        Image.fromarray(a16).save(p)  # mode I;16
        assert Image.open(p).mode.startswith("I")
        return p, np.repeat((a16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    if kind == "cmyk":  # PIL's CMYK -> RGB: (255 - C, 255 - M, 255 - Y) for K = 0
        p = tmp_path / "cmyk.jpg"
        Image.new("CMYK", (w, h), (10, 200, 30, 0)).save(p)
        return p, np.broadcast_to(np.array([245, 55, 225], np.uint8), (h, w, 3))
    if kind == "exif_rotated":  # orientation 6: shown rotated 90 deg clockwise (30 x 20)
        p = tmp_path / "exif6.png"
        save_exif(p, base, 6)
        return p, np.ascontiguousarray(np.rot90(base, k=-1))
    if kind == "tiny":
        p = tmp_path / "tiny.png"
        Image.fromarray(base[:16, :16]).save(p)
        return p, base[:16, :16]
    raise AssertionError(kind)


IMAGE_KINDS = ("grayscale", "rgba", "palette", "16bit", "cmyk", "exif_rotated", "tiny")


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_modes_read_as_8bit_rgb(tmp_path, kind):
    path, expected = _make_mode(tmp_path, kind)
    tol = 6 if kind == "cmyk" else 0  # lossy JPEG
    got = read_image(path, format="RGB")
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= tol
    bgr = read_image(path, format="BGR")
    np.testing.assert_array_equal(bgr, got[:, :, ::-1])
    # the instance mapper without augmentation returns exactly these pixels as (3, H, W)
    h, w = expected.shape[:2]
    d = {"file_name": str(path), "height": h, "width": w, "annotations": []}
    out = identity_instance_mapper()(d)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), got)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_modes_through_real_pipelines(tmp_path, mappers, task, kind):
    path, expected = _make_mode(tmp_path, kind)
    hw = expected.shape[:2]
    out = mappers[task](sample(tmp_path, task, path, hw))
    h, w = check_valid(out, task)
    if task == "semantic":  # mmseg recipe: 512x512 crop, padded
        assert (h, w) == (512, 512)
        assert set(out["sem_seg"].unique().tolist()) <= {0, 1, IGNORE}
        assert (out["sem_seg"] != IGNORE).any()
    else:  # ResizeShortestEdge(800, 1333): tiny images are upsampled
        assert min(h, w) == 800 and max(h, w) <= 1333
        assert out["instances"].gt_classes.tolist() == (
            [THING, STUFF] if task == "panoptic" else [THING]
        )
        # the thing covers the top-left quarter of the (rotated) image
        m = out["instances"].gt_masks.tensor[0]
        assert m[: h // 2 - 40, : w // 2 - 40].all() and not m[h // 2 + 40:].any()


def test_sixteen_bit_integer_and_float_images(tmp_path):
    big = tmp_path / "int32.tif"
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(big)
    with pytest.raises(ImageReadError, match=r"int32\.tif.*outside the 16-bit range"):
        read_image(big, format="RGB")
    ok = tmp_path / "int32_small.tif"
    Image.fromarray(np.full((4, 4), 0x1234, np.int32)).save(ok)
    assert (read_image(ok, format="RGB") == 0x12).all()
    flt = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(flt)
    with pytest.raises(ImageReadError, match=r"float\.tif.*mode F"):
        read_image(flt, format="RGB")
    # format=None keeps the stored values (D2 semantics), e.g. for label maps
    assert read_image(ok).dtype == np.int32


# ----------------------------------------------------------------------------- corrupt files
def _valid_jpeg(path: Path) -> bytes:
    Image.fromarray(rgb(64, 64)).save(path, quality=95)
    return path.read_bytes()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    "kind, reason",
    [("truncated", "truncated"), ("garbage", "cannot identify"), ("empty", "cannot identify")],
)
def test_corrupt_image_is_an_error_naming_the_file(tmp_path, mappers, task, kind, reason):
    good = _valid_jpeg(tmp_path / "good.jpg")
    bad = tmp_path / f"{kind}.jpg"
    bad.write_bytes({"truncated": good[: len(good) // 2], "garbage": b"not a jpeg" * 10,
                     "empty": b""}[kind])
    d = sample(tmp_path, task, bad, (64, 64))
    with pytest.raises(ImageReadError, match=rf"cannot read image file .*{kind}\.jpg.*{reason}"):
        mappers[task](d)
    # OSError, so SkipBadSamples counts it as a bad sample
    assert issubclass(ImageReadError, OSError)


@pytest.mark.parametrize("task", TASKS)
def test_missing_image_file(tmp_path, mappers, task):
    d = sample(tmp_path, task, tmp_path / "gone.jpg", (20, 30))
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*gone\.jpg"):
        mappers[task](d)


def test_missing_annotation_pngs(tmp_path, mappers):
    img = tmp_path / "img.png"
    Image.fromarray(rgb(20, 30)).save(img)
    d = sample(tmp_path, "panoptic", img, (20, 30), pan_seg_file_name=str(tmp_path / "p.png"))
    with pytest.raises(FileNotFoundError, match=r"panoptic PNG not found: .*p\.png"):
        mappers["panoptic"](d)
    d = sample(tmp_path, "semantic", img, (20, 30), sem_seg_file_name=str(tmp_path / "s.png"))
    with pytest.raises(FileNotFoundError, match=r"semantic label PNG not found: .*s\.png"):
        mappers["semantic"](d)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    d["sem_seg_file_name"] = str(tmp_path / "broken.png")
    with pytest.raises(ImageReadError, match=r"semantic label PNG .*broken\.png"):
        mappers["semantic"](d)


# ----------------------------------------------------------------------------- EXIF
@pytest.mark.parametrize("task", TASKS)
def test_exif_rotation_annotations_of_the_stored_frame_are_caught(tmp_path, mappers, task):
    """D2 applies EXIF orientation: annotations must describe the rotated (displayed) image."""
    path = tmp_path / "exif6.jpg"
    save_exif(path, rgb(20, 30), 6)  # stored 20 x 30, displayed 30 x 20
    assert read_image(path, format="RGB").shape == (30, 20, 3)
    # annotation made on the stored frame: height/width of the stored image
    d = sample(tmp_path, task, path, (20, 30))
    with pytest.raises(SizeMismatchError, match=r"exif6\.jpg.*EXIF orientation 6"):
        mappers[task](d)
    if task != "instance":
        # right height/width, but the annotation PNG is still in the stored frame
        d = dict(d, height=30, width=20)
        what = "panoptic PNG" if task == "panoptic" else "semantic label PNG"
        with pytest.raises(ValueError, match=rf"{what} .*exif6_.*EXIF orientation 6"):
            mappers[task](d)
    # annotations of the displayed frame work
    check_valid(mappers[task](sample(tmp_path, task, path, (30, 20))), task)


# ----------------------------------------------------------------------------- huge / tiny
@pytest.fixture(scope="module")
def huge_files(tmp_path_factory) -> Path:
    """8000 x 8000: a solid JPEG image and two-region panoptic / semantic PNGs (cheap to make)."""
    root = tmp_path_factory.mktemp("huge")
    n = 8000
    Image.new("RGB", (n, n), (30, 90, 150)).save(root / "huge.jpg")
    pan = Image.new("RGB", (n, n), tuple(id2rgb(2)))
    pan.paste(tuple(id2rgb(1)), (0, 0, n // 2, n // 2))
    pan.save(root / "huge_pan.png", compress_level=1)
    sem = Image.new("L", (n, n), 1)
    sem.paste(0, (0, 0, n // 2, n // 2))
    sem.save(root / "huge_sem.png", compress_level=1)
    return root


@pytest.mark.parametrize("task", TASKS)
def test_huge_image_is_resized_with_bounded_memory(huge_files, mappers, task):
    n = 8000
    d = {"file_name": str(huge_files / "huge.jpg"), "height": n, "width": n, "image_id": 1}
    if task == "panoptic":
        d["pan_seg_file_name"] = str(huge_files / "huge_pan.png")
        d["segments_info"] = [{"id": 1, "category_id": THING, "isthing": True, "iscrowd": 0},
                              {"id": 2, "category_id": STUFF, "isthing": False, "iscrowd": 0}]
    elif task == "instance":
        d["annotations"] = [{"category_id": THING, "iscrowd": 0, "bbox": [0, 0, 4000, 4000],
                             "bbox_mode": BoxMode.XYWH_ABS,
                             "segmentation": [[0, 0, 4000, 0, 4000, 4000, 0, 4000]]}]
    else:
        d["sem_seg_file_name"] = str(huge_files / "huge_sem.png")
    tracemalloc.start()
    try:
        out = mappers[task](d)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    h, w = check_valid(out, task)
    assert (h, w) == ((512, 512) if task == "semantic" else (800, 800))
    full = n * n * 3  # one uint8 RGB copy at full size: 192 MB
    # numpy + Python buffers (PIL's own are not traced). PIL -> numpy briefly needs two copies,
    # so reading image + annotation peaks at ~3 full-size RGB copies; a float64 or per-segment
    # full-size array (e.g. a full-resolution label converted before the resize) would exceed it.
    assert peak < 3.2 * full, f"peak {peak / 2**20:.0f} MiB"
    if task != "semantic":
        assert len(out["instances"]) == (2 if task == "panoptic" else 1)
    if task != "semantic":  # (the ADE recipe has photometric distortion)
        assert (out["image"][:, h // 2, w // 2] - torch.tensor([30, 90, 150])).abs().max() <= 3


# ----------------------------------------------------------------------------- no targets
@pytest.mark.parametrize("task", TASKS)
def test_no_annotations_or_only_crowd(tmp_path, mappers, task):
    img = tmp_path / "img.png"
    Image.fromarray(rgb(20, 30)).save(img)
    d = sample(tmp_path, task, img, (20, 30))
    if task == "panoptic":
        variants = [dict(d, segments_info=[]),
                    dict(d, segments_info=[dict(d["segments_info"][0], iscrowd=1)])]
    elif task == "instance":
        variants = [dict(d, annotations=[]),
                    dict(d, annotations=[dict(d["annotations"][0], iscrowd=1)])]
    else:  # a label map that is all "ignore"
        Image.fromarray(np.full((20, 30), IGNORE, np.uint8)).save(tmp_path / "void.png")
        variants = [dict(d, sem_seg_file_name=str(tmp_path / "void.png"))]
    for v in variants:
        out = mappers[task](v)
        h, w = check_valid(out, task)
        if task != "semantic":
            assert len(out["instances"]) == 0
            assert tuple(out["instances"].gt_masks.tensor.shape) == (0, h, w)
        if task != "instance":
            assert (out["sem_seg"] == IGNORE).all()


# ----------------------------------------------------------------------------- polygons
def test_degenerate_polygons_dropped_like_d2_loader(tmp_path, caplog):
    """< 3 points or an odd coordinate count: dropped with a warning (as D2's load_coco_json)."""
    Image.fromarray(rgb(20, 30)).save(tmp_path / "img.png")
    good = [2, 2, 12, 2, 12, 8, 2, 8]
    segms = {1: [[1, 1, 5, 5]], 2: [[1, 1, 5, 5, 9]], 3: [good, [3, 3, 4]], 4: [good]}
    coco = {
        "images": [{"id": 1, "file_name": "img.png", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": k, "image_id": 1, "category_id": 1 + k % 2, "iscrowd": 0,
             "bbox": [2, 2, 10, 6], "area": 60, "segmentation": s}
            for k, s in segms.items()
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    d2_dicts = load_coco_json(str(tmp_path / "a.json"), str(tmp_path))
    assert [len(a["segmentation"]) for a in d2_dicts[0]["annotations"]] == [1, 1]  # 3 and 4
    raw = {"file_name": str(tmp_path / "img.png"), "height": 20, "width": 30, "image_id": 1,
           "annotations": [dict(a, category_id=a["category_id"] - 1, bbox_mode=BoxMode.XYWH_ABS)
                           for a in coco["annotations"]]}
    m = KNetInstanceDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                                  num_thing_classes=2)
    with caplog.at_level(logging.WARNING):
        ours = m(raw)["instances"]
    ref = m(dict(raw, annotations=[dict(a, category_id=0) for a in d2_dicts[0]["annotations"]]))
    assert ours.gt_classes.tolist() == [1, 0]  # annotations 3 and 4 (categories 2, 1)
    assert torch.equal(ours.gt_masks.tensor, ref["instances"].gt_masks.tensor)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("img.png (image_id 1): annotation" in s and "degenerate polygon" in s
               for s in msgs) == 3


# ----------------------------------------------------------------------------- category ids
def test_out_of_range_category_ids_name_file_image_and_id(tmp_path, mappers):
    img = tmp_path / "img.png"
    Image.fromarray(rgb(20, 30)).save(img)
    d = sample(tmp_path, "instance", img, (20, 30))
    d["annotations"][0]["category_id"] = 80
    with pytest.raises(ValueError, match=r"img\.png \(image_id 7\): annotation 0 has "
                                         r"category_id 80, outside .*\[0, 80\)"):
        mappers["instance"](d)
    d = sample(tmp_path, "panoptic", img, (20, 30))
    d["segments_info"][1]["category_id"] = 133
    with pytest.raises(ValueError, match=r"img_pan\.png \(image_id 7\): segment 2 has "
                                         r"category_id 133, outside .*\[0, 133\)"):
        mappers["panoptic"](d)
    d = sample(tmp_path, "semantic", img, (20, 30))
    lab = np.zeros((20, 30), np.uint8)
    lab[0, :3] = [150, 151, 254]
    Image.fromarray(lab).save(d["sem_seg_file_name"])
    with pytest.raises(ValueError, match=r"img_sem\.png \(image_id 7\): label value\(s\) "
                                         r"\[150, 151, 254\] outside .*\[0, 150\)"):
        mappers["semantic"](d)
    # 16-bit label maps keep ids > 255 and are checked the same way
    Image.fromarray(np.full((20, 30), 300, np.uint16)).save(d["sem_seg_file_name"])
    with pytest.raises(ValueError, match=r"label value\(s\) \[300\]"):
        mappers["semantic"](d)


def test_colour_label_map_is_refused_grey_rgb_accepted(tmp_path):
    lab = np.zeros((20, 30), np.uint8)
    lab[5:, :] = 3
    Image.fromarray(np.dstack([lab] * 3)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_rgb.png"), lab)
    Image.fromarray(rgb(20, 30)).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match=r"colour\.png is a colour image"):
        read_label_map(tmp_path / "colour.png")
    Image.fromarray(rgb(20, 30)).save(tmp_path / "img.png")
    d = {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "colour.png")}
    with pytest.raises(ImageReadError, match=r"semantic label PNG .*colour\.png"):
        identity_semantic_mapper()(d)


def _coco_instance_json(tmp_path: Path, cat: int) -> Path:
    Image.fromarray(rgb(20, 30)).save(tmp_path / "img.jpg")
    data = {
        "images": [{"id": 5, "file_name": "img.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [{"id": 9, "image_id": 5, "category_id": cat, "iscrowd": 0,
                         "bbox": [2, 2, 10, 6], "area": 60,
                         "segmentation": [[2, 2, 12, 2, 12, 8, 2, 8]]}],
    }
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(data))
    return path


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def test_loader_unknown_category_in_instance_json(tmp_path):
    name = "knet_test_bad_inst_cat"
    _unregister(name)
    try:
        register_instance_dataset(name, _coco_instance_json(tmp_path, cat=2), tmp_path)
        with pytest.raises(ValueError, match=r"inst\.json: image_id 5 \(img\.jpg\): annotation "
                                             r"9 has category_id 2, which is not one of"):
            DatasetCatalog.get(name)
    finally:
        _unregister(name)
    name = "knet_test_good_inst_cat"
    _unregister(name)
    try:
        register_instance_dataset(name, _coco_instance_json(tmp_path, cat=3), tmp_path)
        (d,) = DatasetCatalog.get(name)
        assert d["annotations"][0]["category_id"] == 1  # contiguous
    finally:
        _unregister(name)


def _panoptic_json(tmp_path: Path, cat: int, png_name: str = "img.png") -> Dict[str, Path]:
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    (tmp_path / "pan").mkdir(exist_ok=True)
    Image.fromarray(rgb(20, 30)).save(tmp_path / "images" / "img.jpg")
    Image.fromarray(id2rgb(square_ids(20, 30)).astype(np.uint8)).save(tmp_path / "pan" / png_name)
    data = {
        "images": [{"id": 5, "file_name": "img.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 1, "name": "thing", "isthing": 1},
                       {"id": 7, "name": "stuff", "isthing": 0}],
        "annotations": [{"image_id": 5, "file_name": "img.png", "segments_info": [
            {"id": 1, "category_id": 1, "iscrowd": 0, "area": 150, "bbox": [0, 0, 15, 10]},
            {"id": 2, "category_id": cat, "iscrowd": 0, "area": 450, "bbox": [0, 0, 30, 20]},
        ]}],
    }
    (tmp_path / "pan.json").write_text(json.dumps(data))
    return {"image_root": tmp_path / "images", "panoptic_root": tmp_path / "pan",
            "panoptic_json": tmp_path / "pan.json"}


def test_loader_unknown_category_and_missing_files_in_panoptic_json(tmp_path):
    name = "knet_test_bad_pan"
    cases = [
        (_panoptic_json(tmp_path / "a", cat=99), ValueError,
         r"pan\.json: image_id 5 \(img\.jpg\): segment 2 has category_id 99, which is not"),
        (_panoptic_json(tmp_path / "b", cat=7, png_name="other.png"), FileNotFoundError,
         r"pan\.json: file of its first annotation not found: .*pan/img\.png"),
    ]
    for kwargs, exc, pattern in cases:
        _unregister(name)
        try:
            register_panoptic_dataset(name, **kwargs)
            with pytest.raises(exc, match=pattern):
                DatasetCatalog.get(name)
        finally:
            _unregister(name)
    # the good one loads, with contiguous ids (thing 0, stuff 1)
    _unregister(name)
    try:
        kwargs = _panoptic_json(tmp_path / "c", cat=7)
        register_panoptic_dataset(name, **kwargs)
        (d,) = DatasetCatalog.get(name)
        assert [s["category_id"] for s in d["segments_info"]] == [0, 1]
        (kwargs["image_root"] / "img.jpg").unlink()  # listed in the JSON, gone from disk
        with pytest.raises(FileNotFoundError, match=r"first annotation not found: .*img\.jpg"):
            DatasetCatalog.get(name)
        m = KNetPanopticDatasetMapper(is_train=True, augmentations=[], image_format="RGB",
                                      num_thing_classes=1, num_stuff_classes=1)
        with pytest.raises(FileNotFoundError, match=r"image file not found: .*img\.jpg"):
            m(d)  # the mapper names it too (e.g. a file deleted after loading)
    finally:
        _unregister(name)


# ----------------------------------------------------------------------------- PNG vs JSON
def test_panoptic_png_json_disagreement(tmp_path, caplog):
    img = tmp_path / "img.png"
    Image.fromarray(rgb(20, 30)).save(img)
    d = sample(tmp_path, "panoptic", img, (20, 30))
    m = identity_panoptic_mapper()
    # a JSON segment absent from the PNG: error
    bad = dict(d, segments_info=d["segments_info"] + [
        {"id": 77, "category_id": 3, "isthing": True, "iscrowd": 0}])
    with pytest.raises(ValueError, match=r"img_pan\.png \(image_id 7\): segment id 77 "
                                         r"\(category 3\) is listed in segments_info but absent"):
        m(bad)
    # PNG ids not in the JSON: void (ignored), warned once per PNG
    ids = square_ids(20, 30)
    ids[15:, 20:] = 500
    ids[0, 29] = 600
    Image.fromarray(id2rgb(ids).astype(np.uint8)).save(d["pan_seg_file_name"])
    with caplog.at_level(logging.WARNING):
        out = m(d)
        m(d)
    check_valid(out, "panoptic")
    sem = out["sem_seg"].numpy()
    assert (sem[ids >= 500] == IGNORE).all() and (sem[ids == 1] == THING).all()
    assert not out["instances"].gt_masks.tensor[:, ids >= 500].any()
    warns = [r.getMessage() for r in caplog.records
             if "not listed in segments_info" in r.getMessage()]
    assert len(warns) == 1 and "img_pan.png" in warns[0] and "[500, 600]" in warns[0]
    # a PNG of the wrong size: error naming both files
    Image.fromarray(id2rgb(square_ids(20, 31)).astype(np.uint8)).save(d["pan_seg_file_name"])
    with pytest.raises(ValueError, match=r"panoptic PNG .*img_pan\.png has size \(20, 31\).*"
                                         r"img\.png has size \(20, 30\)"):
        m(d)


# ----------------------------------------------------------------------------- skipping
def _mixed_dataset(tmp_path: Path, n_good: int, n_bad: int):
    dicts = []
    for i in range(n_good):
        p = tmp_path / f"good{i}.png"
        Image.fromarray(rgb(20, 30, seed=i)).save(p)
        dicts.append({"file_name": str(p), "height": 20, "width": 30, "annotations": []})
    for i in range(n_bad):
        p = tmp_path / f"bad{i}.jpg"
        p.write_bytes(b"broken" * 20)
        dicts.append({"file_name": str(p), "height": 20, "width": 30, "annotations": []})
    return dicts


def test_training_loader_skips_and_counts_bad_samples(tmp_path, caplog):
    dicts = _mixed_dataset(tmp_path, n_good=3, n_bad=2)
    mapper = SkipBadSamples(identity_instance_mapper())
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=2, num_workers=0, aspect_ratio_grouping=False
    )
    with caplog.at_level(logging.WARNING), EventStorage(0) as storage:
        it = iter(loader)
        batches = [next(it) for _ in range(6)]
    assert all(len(b) == 2 for b in batches)
    assert all(Path(x["file_name"]).name.startswith("good") for b in batches for x in b)
    assert mapper.num_skipped >= 2  # both bad files were drawn at least once in 12 samples
    logged = [r.getMessage() for r in caplog.records if "Skipping bad training sample" in
              r.getMessage()]
    assert len(logged) == 2  # once per file
    assert all("ImageReadError: cannot read image file" in s and "bad" in s for s in logged)
    assert storage.latest()["data/num_skipped_samples"][0] == mapper.num_skipped


def test_all_bad_samples_give_up_with_a_clear_error(tmp_path):
    dicts = _mixed_dataset(tmp_path, n_good=0, n_bad=3)
    mapper = SkipBadSamples(identity_instance_mapper(), dataset_size=len(dicts))
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=1, num_workers=0, aspect_ratio_grouping=False
    )
    with pytest.raises(TooManyBadSamplesError, match=r"3 training samples in a row could not "
                                                     r"be loaded(.|\n)*bad\d\.jpg: ImageReadError"):
        next(iter(loader))
    # without the dataset size the limit is max_consecutive_failures
    m = SkipBadSamples(identity_instance_mapper(), max_consecutive_failures=4)
    for _ in range(3):
        assert m(dicts[0]) is None
    (tmp_path / "g").mkdir()
    good = _mixed_dataset(tmp_path / "g", n_good=1, n_bad=0)
    assert m(good[0]) is not None and m.num_consecutive == 0  # a success resets the streak
    for _ in range(3):
        assert m(dicts[1]) is None
    with pytest.raises(TooManyBadSamplesError):
        m(dicts[2])
    assert m.num_skipped == 7


def test_skip_does_not_hide_programming_errors(tmp_path):
    def buggy(d):
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError):
        SkipBadSamples(buggy)({"file_name": "x.jpg"})


def test_skip_bad_samples_is_on_by_default():
    cfg = load_config(REPO_ROOT / CONFIGS["panoptic"])
    assert cfg.DATALOADER.SKIP_BAD_SAMPLES is True


# ----------------------------------------------------------------------------- demo
def test_demo_reads_images_like_the_mappers(tmp_path):
    from knet_d2.rendering import run_on_images

    seen = []

    class StubDemo:
        def predictor(self, image):
            seen.append(image.copy())
            return {}

        def prepare(self, predictions):
            return "none", None

        def draw(self, image_rgb, key, payload):
            from detectron2.utils.visualizer import VisImage

            return VisImage(image_rgb)

        def describe(self, key, payload):
            return "nothing"

    p16, expected = _make_mode(tmp_path, "16bit")
    good = _valid_jpeg(tmp_path / "ok.jpg")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good[: len(good) // 2])
    summary = run_on_images(
        StubDemo(), [p16, trunc], [tmp_path / "o1.png", tmp_path / "o2.png"], progress=False
    )
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], expected[:, :, ::-1])  # BGR, scaled 16 -> 8 bit
    assert [p.name for p, _ in summary.failed] == ["trunc.jpg"]
    assert "trunc.jpg" in summary.failed[0][1] and "truncated" in summary.failed[0][1]


def test_pil_pixel_limit_is_a_clear_error(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.fromarray(rgb(20, 30)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250)  # 600 px > 2 x limit: "bomb"
    with pytest.raises(ImageReadError, match=r"big\.png.*MAX_IMAGE_PIXELS"):
        read_image(p, format="RGB")


@pytest.mark.parametrize("task", TASKS)
def test_evaluation_loader_reads_images_like_training(tmp_path, task):
    """train_net's test loader maps with the K-Net mapper in evaluation mode: a 16-bit grey
    PNG is scaled to 8 bits (D2's reader would clip it to near white), annotation fields are
    dropped, and an unreadable file is an error naming it."""
    import train_net

    path, expected = _make_mode(tmp_path, "16bit")
    h, w = expected.shape[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    name = f"_eval_reader_{task}"
    _unregister(name)
    dicts = [
        {"file_name": str(path), "image_id": 0, "height": h, "width": w, "annotations": [],
         "sem_seg_file_name": str(tmp_path / "unused.png")},
        {"file_name": str(bad), "image_id": 1, "height": h, "width": w},
    ]
    DatasetCatalog.register(name, lambda: dicts)
    try:
        cfg = load_config(REPO_ROOT / CONFIGS[task])
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = min(h, w), 4 * max(h, w)
        cfg.DATALOADER.NUM_WORKERS = 0
        loader = iter(train_net.Trainer.build_test_loader(cfg, name))
        (out,) = next(loader)
        assert set(out) == {"file_name", "image_id", "height", "width", "image"}
        assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, h, w)
        # RGB and BGR are the same for a grey image
        assert torch.equal(out["image"], torch.from_numpy(expected).permute(2, 0, 1))
        with pytest.raises(ImageReadError, match="broken.jpg"):
            next(loader)
    finally:
        _unregister(name)
