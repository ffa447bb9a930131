"""The JSON loaders of knet_d2.data.datasets.register_custom on bad files: unknown category ids
and missing files are errors naming the JSON, the image and the annotation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from panopticapi.utils import id2rgb
from PIL import Image

from knet_d2.data.dataset_mappers import KNetPanopticDatasetMapper
from knet_d2.data.datasets.register_custom import (
    register_instance_dataset,
    register_panoptic_dataset,
)
from tests.helpers.catalogs import unregister_datasets
from tests.helpers.image_files import rgb, square_ids


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


def test_loader_unknown_category_in_instance_json(tmp_path):
    name = "knet_test_bad_inst_cat"
    unregister_datasets([name])
    try:
        register_instance_dataset(name, _coco_instance_json(tmp_path, cat=2), tmp_path)
        with pytest.raises(ValueError, match=r"inst\.json: image_id 5 \(img\.jpg\): annotation "
                                             r"9 has category_id 2, which is not one of"):
            DatasetCatalog.get(name)
    finally:
        unregister_datasets([name])
    name = "knet_test_good_inst_cat"
    unregister_datasets([name])
    try:
        register_instance_dataset(name, _coco_instance_json(tmp_path, cat=3), tmp_path)
        (d,) = DatasetCatalog.get(name)
        assert d["annotations"][0]["category_id"] == 1  # contiguous
    finally:
        unregister_datasets([name])


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
        unregister_datasets([name])
        try:
            register_panoptic_dataset(name, **kwargs)
            with pytest.raises(exc, match=pattern):
                DatasetCatalog.get(name)
        finally:
            unregister_datasets([name])
    # the good one loads, with contiguous ids (thing 0, stuff 1)
    unregister_datasets([name])
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
        unregister_datasets([name])
