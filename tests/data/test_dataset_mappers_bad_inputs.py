"""Bad and unusual inputs to knet_d2.data.dataset_mappers: each is either handled (output valid)
or a clear error naming the file.

Covers the three training mappers (knet_panoptic, knet_instance, knet_semantic, built from the
real configs) and the evaluation loader. Every bad file is made with PIL in ``tmp_path``. The
other bad-input tests are next to their modules: data/test_image_io.py,
data/test_register_custom.py, data/test_skip_bad_samples.py, demo/test_image_reading.py.
"""
from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode
from panopticapi.utils import id2rgb
from PIL import Image

from knet_d2.data.dataset_mappers import (
    KNetInstanceDatasetMapper,
    build_knet_train_mapper,
)
from knet_d2.data.image_io import ImageReadError, read_image
from tests.helpers.catalogs import unregister_datasets
from tests.helpers.image_files import (
    IMAGE_KINDS,
    make_image_mode,
    rgb,
    save_exif,
    square_ids,
    write_valid_jpeg,
)
from tests.helpers.mapper_samples import (
    CONFIGS,
    IGNORE,
    STUFF,
    TASKS,
    THING,
    check_valid,
    identity_panoptic_mapper,
    sample,
)
from tests.helpers.paths import REPO_ROOT, load_config


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


# ----------------------------------------------------------------------------- image modes


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_modes_through_real_pipelines(tmp_path, mappers, task, kind):
    path, expected = make_image_mode(tmp_path, kind)
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


# ----------------------------------------------------------------------------- corrupt files


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    "kind, reason",
    [("truncated", "truncated"), ("garbage", "cannot identify"), ("empty", "cannot identify")],
)
def test_corrupt_image_is_an_error_naming_the_file(tmp_path, mappers, task, kind, reason):
    good = write_valid_jpeg(tmp_path / "good.jpg")
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


@pytest.mark.parametrize("task", TASKS)
def test_evaluation_loader_reads_images_like_training(tmp_path, task):
    """train_net's test loader maps with the K-Net mapper in evaluation mode: a 16-bit grey
    PNG is scaled to 8 bits (D2's reader would clip it to near white), annotation fields are
    dropped, and an unreadable file is an error naming it."""
    import train_net

    path, expected = make_image_mode(tmp_path, "16bit")
    h, w = expected.shape[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    name = f"_eval_reader_{task}"
    unregister_datasets([name])
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
        unregister_datasets([name])
