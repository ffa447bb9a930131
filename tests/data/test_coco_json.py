"""knet_d2.data.datasets.coco_json: the loaders register_custom registers."""

import copy
import json

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from knet_d2.data.datasets.coco_json import load_panoptic_json, read_coco_json
from knet_d2.data.datasets.register_custom import (
    metadata_from_categories,
    register_panoptic_dataset,
)


def test_panoptic_dicts_equal_d2s_and_register_sets_d2s_metadata(shared_data, tmp_path):
    sample = shared_data / "coco_panoptic_sample"
    paths = dict(
        image_root=str(sample / "input_images"),
        panoptic_root=str(sample / "panoptic_examples"),
        panoptic_json=str(sample / "panoptic_examples.json"),
    )
    meta = metadata_from_categories(json.loads((sample / "panoptic_examples.json").read_text())
                                    ["categories"])
    ours = load_panoptic_json(paths["panoptic_json"], paths["image_root"],
                              paths["panoptic_root"], meta)
    d2 = load_coco_panoptic_json(paths["panoptic_json"], paths["image_root"],
                                 paths["panoptic_root"], copy.deepcopy(meta))
    assert len(ours) > 0 and ours == d2
    assert any(s["isthing"] for d in ours for s in d["segments_info"])
    name = "knet_test_coco_json_sample"
    try:
        register_panoptic_dataset(name, **paths, sem_seg_root=tmp_path)
        m = MetadataCatalog.get(name)
        assert (m.evaluator_type, m.ignore_label, m.label_divisor) == ("coco_panoptic_seg", 255,
                                                                       1000)
        assert (m.panoptic_json, m.json_file, m.sem_seg_root) == (paths["panoptic_json"], None,
                                                                  str(tmp_path))
        loaded = DatasetCatalog.get(name)
        assert [d["sem_seg_file_name"] for d in loaded] == [
            str(tmp_path / d["pan_seg_file_name"].rsplit("/", 1)[1]) for d in d2]
        assert [{k: v for k, v in d.items() if k != "sem_seg_file_name"} for d in loaded] == d2
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_bad_json_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"panoptic JSON file not found: .*nope\.json"):
        read_coco_json(tmp_path / "nope.json", "panoptic JSON")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        read_coco_json(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"list\.json: expected a JSON object, got list"):
        read_coco_json(listed)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"annotations": [], "categories": []}))
    meta = metadata_from_categories([{"id": 1, "name": "a", "isthing": 1}])
    with pytest.raises(ValueError, match=r"empty\.json: no annotations to load"):
        load_panoptic_json(empty, tmp_path, tmp_path, meta)
