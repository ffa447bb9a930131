"""Dataset registration helpers (metadata, catalogs, own-data errors) and label converters.

The synthetic generator itself is tested in test_synthetic.py."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image

import knet_d2  # noqa: F401  (registers the dataset names)
from knet_d2.data.datasets import ade20k, coco_panoptic_semseg, register_synthetic
from knet_d2.data.datasets.register_custom import (
    contiguous_id_map,
    metadata_from_categories,
    register_instance_dataset,
    register_panoptic_dataset,
    register_sem_seg_dataset,
)
from tests.helpers.catalogs import unregister_datasets
from tests.helpers.paths import REPO_ROOT


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# Metadata and registration
# ---------------------------------------------------------------------------------------------
def test_metadata_from_categories_puts_things_first():
    cats = [
        {"id": 4, "name": "road", "isthing": 0},
        {"id": 9, "name": "car", "isthing": 1, "color": [1, 2, 3]},
        {"id": 2, "name": "person", "isthing": 1},
        {"id": 30, "name": "sky", "isthing": 0},
    ]
    meta = metadata_from_categories(cats)
    assert meta["thing_classes"] == ["person", "car"]
    assert meta["stuff_classes"] == ["person", "car", "road", "sky"]
    assert meta["thing_dataset_id_to_contiguous_id"] == {2: 0, 9: 1}
    assert meta["stuff_dataset_id_to_contiguous_id"] == {2: 0, 9: 1, 4: 2, 30: 3}
    assert meta["thing_colors"][1] == [1, 2, 3] and len(meta["stuff_colors"]) == 4
    with pytest.raises(ValueError, match="duplicate"):
        metadata_from_categories(cats + [{"id": 4, "name": "x", "isthing": 0}])


def test_synthetic_splits_load_through_catalog(tmp_path):
    prefix = "knet_test_catalog"
    names = register_synthetic.register_synthetic_datasets(
        tmp_path, {"train": 4, "val": 3}, prefix=prefix
    )
    try:
        assert not (tmp_path / "train").exists()  # registering generates nothing
        pan = DatasetCatalog.get(f"{prefix}_panoptic_train")  # generates train lazily
        assert (tmp_path / "train" / "info.json").is_file() and not (tmp_path / "val").exists()
        assert len(pan) == 4
        for d in pan:
            for key in ("file_name", "image_id", "pan_seg_file_name", "sem_seg_file_name"):
                assert key in d and (key == "image_id" or os.path.isfile(d[key])), key
            for s in d["segments_info"]:
                assert s["isthing"] == (s["category_id"] < 4) and 0 <= s["category_id"] < 8
        ins = DatasetCatalog.get(f"{prefix}_instance_train")
        assert [d["file_name"] for d in ins] == [d["file_name"] for d in pan]
        annos = [a for d in ins for a in d["annotations"]]
        assert {a["category_id"] for a in annos} <= {0, 1, 2, 3}
        assert all({"bbox", "bbox_mode", "segmentation"} <= set(a) for a in annos)
        sem = DatasetCatalog.get(f"{prefix}_sem_seg_val")
        assert len(sem) == 3 and all(os.path.isfile(d["sem_seg_file_name"]) for d in sem)
        assert register_synthetic.ensure_synthetic_for_datasets(
            [f"{prefix}_instance_val", "coco_2017_val"]
        ) == [f"{prefix}_instance_val"]

        m = MetadataCatalog.get(f"{prefix}_panoptic_val")
        assert m.evaluator_type == "coco_panoptic_seg" and m.label_divisor == 1000
        assert m.ignore_label == 255 and m.sem_seg_root.endswith("semantic")
        assert m.thing_classes == ["circle", "square", "triangle", "star"]
        assert m.stuff_classes == m.thing_classes + ["sky", "grass", "wall", "water"]
        assert MetadataCatalog.get(f"{prefix}_instance_val").evaluator_type == "coco"
        assert MetadataCatalog.get(f"{prefix}_sem_seg_val").evaluator_type == "sem_seg"
    finally:
        unregister_datasets(names)


def test_import_registers_default_names_without_generating(tmp_path):
    code = textwrap.dedent(
        """
        import os, knet_d2
        from detectron2.data import DatasetCatalog, MetadataCatalog
        root = os.environ["DETECTRON2_DATASETS"]
        for split in ("train", "val", "train16k"):
            for kind in ("panoptic", "instance", "sem_seg"):
                assert f"knet_synth_{kind}_{split}" in DatasetCatalog.list()
            m = MetadataCatalog.get(f"knet_synth_panoptic_{split}")
            assert m.panoptic_json == os.path.join(root, "knet_synth", split, "panoptic.json")
            assert m.json_file.endswith("instances.json") and m.image_root.endswith("images")
        m = MetadataCatalog.get("knet_coco_2017_val_panoptic_with_sem_seg")
        assert m.sem_seg_root == os.path.join(root, "coco", "panoptic_semseg_val2017")
        print("OK", sorted(os.listdir(root)))
        """
    )
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK []" in out.stdout


def test_coco_panoptic_with_sem_seg_matches_d2_ids():
    ours = MetadataCatalog.get("knet_coco_2017_val_panoptic_with_sem_seg")
    d2 = MetadataCatalog.get("coco_2017_val_panoptic")
    assert len(ours.thing_classes) == 80 and len(ours.stuff_classes) == 133
    assert ours.thing_dataset_id_to_contiguous_id == d2.thing_dataset_id_to_contiguous_id
    # D2's map covers the 53 stuff ids only; ours (M2F convention) covers all 133 ids.
    ours_stuff = ours.stuff_dataset_id_to_contiguous_id
    assert len(ours_stuff) == 133
    assert ours_stuff.items() >= d2.stuff_dataset_id_to_contiguous_id.items()
    assert ours_stuff.items() >= ours.thing_dataset_id_to_contiguous_id.items()
    assert ours.stuff_classes == d2.stuff_classes
    assert ours.evaluator_type == "coco_panoptic_seg" and ours.ignore_label == 255


def test_register_custom_errors_name_the_path(tmp_path, shared_data):
    sample = shared_data / "coco_panoptic_sample"
    missing = tmp_path / "nope"
    good = dict(
        image_root=sample / "input_images",
        panoptic_root=sample / "panoptic_examples",
        panoptic_json=sample / "panoptic_examples.json",
    )
    for key in good:
        kwargs = dict(good, **{key: missing})
        with pytest.raises(FileNotFoundError, match=str(missing)):
            register_panoptic_dataset("knet_test_bad", **kwargs)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        register_panoptic_dataset("knet_test_bad", **good, sem_seg_root=missing)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"annotations": []}))
    with pytest.raises(ValueError, match=str(bad_json)):
        register_panoptic_dataset("knet_test_bad", **dict(good, panoptic_json=bad_json))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        register_instance_dataset("knet_test_bad", missing, sample / "input_images")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        register_instance_dataset("knet_test_bad", good["panoptic_json"], missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        register_sem_seg_dataset("knet_test_bad", missing, tmp_path, ["a"])
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        register_sem_seg_dataset("knet_test_bad", sample / "input_images", tmp_path, ["a"])
    assert "knet_test_bad" not in DatasetCatalog.list()


# ---------------------------------------------------------------------------------------------
# Label converters
# ---------------------------------------------------------------------------------------------
def test_convert_ade20k_label(tmp_path, shared_data):
    src = shared_data / "ade20k_sceneparsing_sample" / "annotations" / "ADE_val_00000003.png"
    ade20k.convert_ade20k_label(src, tmp_path / "out" / "a.png")
    before = np.asarray(Image.open(src)).astype(int)
    after = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert after.dtype == np.uint8 and after.shape == before.shape
    np.testing.assert_array_equal(after[before == 0], 255)
    np.testing.assert_array_equal(after[before > 0], before[before > 0] - 1)
    assert (before == 0).any()

    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match=str(rgb)):
        ade20k.convert_ade20k_label(rgb, tmp_path / "x.png")
    big = tmp_path / "big.png"
    Image.fromarray(np.full((4, 4), 151, np.uint8)).save(big)
    with pytest.raises(ValueError, match=str(big)):
        ade20k.convert_ade20k_label(big, tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        ade20k.convert_ade20k_label(tmp_path / "missing.png", tmp_path / "x.png")


def test_prepare_ade20k_script(tmp_path, shared_data, monkeypatch, capsys):
    src = shared_data / "ade20k_sceneparsing_sample" / "annotations"
    ann = tmp_path / "ADEChallengeData2016" / "annotations"
    for split in ("training", "validation"):
        (ann / split).mkdir(parents=True)
        for f in sorted(src.glob("*.png"))[:2]:
            (ann / split / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    runpy.run_path(str(REPO_ROOT / "datasets" / "prepare_ade20k_sem_seg.py"), run_name="__main__")
    assert "validation: converted 2 label files" in capsys.readouterr().out
    conv = tmp_path / "ADEChallengeData2016" / "annotations_detectron2" / "validation"
    assert sorted(p.name for p in conv.glob("*.png")) == sorted(
        f.name for f in sorted(src.glob("*.png"))[:2]
    )


def test_coco_panoptic_to_semantic(tmp_path, shared_data):
    sample = shared_data / "coco_panoptic_sample"
    pan_json = sample / "panoptic_examples.json"
    n = coco_panoptic_semseg.convert_panoptic_to_semantic(
        pan_json, sample / "panoptic_examples", tmp_path / "sem", num_workers=2
    )
    assert n == 2
    data = _load_json(pan_json)
    id_map = contiguous_id_map(data["categories"])
    assert len(id_map) == 133 and max(id_map.values()) == 132
    for ann in data["annotations"]:
        ids = rgb2id(np.asarray(Image.open(sample / "panoptic_examples" / ann["file_name"])))
        sem = np.asarray(Image.open(tmp_path / "sem" / ann["file_name"]))
        cats = {s["id"]: id_map[s["category_id"]] for s in ann["segments_info"]}
        for seg_id in np.unique(ids):
            assert np.all(sem[ids == seg_id] == cats.get(int(seg_id), 255))
    bad = dict(data["annotations"][0])
    bad["segments_info"] = [dict(bad["segments_info"][0], category_id=99999)]
    with pytest.raises(ValueError, match=bad["file_name"]):
        coco_panoptic_semseg.panoptic_to_semantic(
            sample / "panoptic_examples" / bad["file_name"], bad["segments_info"], id_map,
            tmp_path / "bad.png",
        )
