"""Synthetic dataset generator, dataset registration helpers and label converters."""

from __future__ import annotations

import filecmp
import json
import os
import runpy
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

import knet_d2  # noqa: F401  (registers the dataset names)
from knet_d2.data import synthetic
from knet_d2.data.datasets import ade20k, coco_panoptic_semseg, register_synthetic
from knet_d2.data.datasets.register_custom import (
    contiguous_id_map,
    metadata_from_categories,
    register_instance_dataset,
    register_panoptic_dataset,
    register_sem_seg_dataset,
)
from knet_d2.data.synthetic import SYNTHETIC_CATEGORIES, generate_synthetic_dataset
from tests.helpers.catalogs import unregister_datasets
from tests.helpers.paths import REPO_ROOT

N_IMAGES = 8


@pytest.fixture(scope="module")
def synth_split(tmp_path_factory) -> Path:
    """An 8-image synthetic split (128 px)."""
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), "val", N_IMAGES)


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _decode(segm, h: int, w: int) -> np.ndarray:
    if isinstance(segm, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_util.decode(rle).astype(bool)


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------
def test_generation_is_deterministic_and_prefix_stable(tmp_path):
    a = generate_synthetic_dataset(tmp_path / "a", "train", 5, seed=7)
    b = generate_synthetic_dataset(tmp_path / "b", "train", 5, seed=7)
    c = generate_synthetic_dataset(tmp_path / "c", "train", 3, seed=7)
    d = generate_synthetic_dataset(tmp_path / "d", "train", 3, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 * 5 + 3
    for rel in files:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
    for sub in ("images", "panoptic", "semantic"):  # image i depends only on (seed, i)
        for i in range(3):
            name = f"{i:06d}.{'jpg' if sub == 'images' else 'png'}"
            assert filecmp.cmp(a / sub / name, c / sub / name, shallow=False)
    assert not filecmp.cmp(c / "images/000000.jpg", d / "images/000000.jpg", shallow=False)
    # no temporary directories left behind
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["train"]


def test_counts_sizes_and_categories(synth_split, tmp_path):
    pan = _load_json(synth_split / "panoptic.json")
    ins = _load_json(synth_split / "instances.json")
    assert len(pan["images"]) == len(pan["annotations"]) == N_IMAGES
    assert ins["images"] == pan["images"]
    for sub, ext in (("images", "jpg"), ("panoptic", "png"), ("semantic", "png")):
        assert len(list((synth_split / sub).glob(f"*.{ext}"))) == N_IMAGES
    for img in pan["images"]:
        assert (img["height"], img["width"]) == (128, 128)
        with Image.open(synth_split / "images" / img["file_name"]) as im:
            assert (im.mode, im.size) == ("RGB", (128, 128))
        stem = Path(img["file_name"]).stem
        with Image.open(synth_split / "semantic" / f"{stem}.png") as im:
            assert im.mode == "L"
    assert [c["id"] for c in pan["categories"]] == [1, 3, 5, 7, 101, 103, 105, 107]
    assert [c["isthing"] for c in pan["categories"]] == [1] * 4 + [0] * 4
    assert all(len(c["color"]) == 3 for c in pan["categories"])
    assert [c["id"] for c in ins["categories"]] == [1, 3, 5, 7]
    # a non-default size
    other = generate_synthetic_dataset(tmp_path, "x", 2, image_size=96)
    with Image.open(other / "images" / "000001.jpg") as im:
        assert im.size == (96, 96)
    assert _load_json(other / "info.json")["image_size"] == 96


def test_panoptic_png_matches_segments_info(synth_split):
    pan = _load_json(synth_split / "panoptic.json")
    n_things = n_crowd = 0
    for ann in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(synth_split / "panoptic" / ann["file_name"])))
        seg_ids = [s["id"] for s in ann["segments_info"]]
        assert len(set(seg_ids)) == len(seg_ids)
        assert set(np.unique(ids)) - {0} == set(seg_ids)
        for s in ann["segments_info"]:
            m = ids == s["id"]
            ys, xs = np.nonzero(m)
            assert s["area"] == int(m.sum())
            assert s["bbox"] == [xs.min(), ys.min(), xs.ptp() + 1, ys.ptp() + 1]
            if s["category_id"] < 100:
                n_things += 1
                n_crowd += s["iscrowd"]
                assert s["area"] >= 2  # >= 6 px shapes, at most 70% occluded
            else:
                assert s["iscrowd"] == 0
        things = [s for s in ann["segments_info"] if s["category_id"] < 100]
        assert 1 <= len(things) <= 8
    assert n_crowd >= 1 and n_crowd < n_things


def test_instance_json_decodes_to_panoptic_segments(synth_split):
    pan = _load_json(synth_split / "panoptic.json")
    ins = _load_json(synth_split / "instances.json")
    kinds = {"polygon": 0, "rle": 0, "crowd_rle": 0}
    by_image = {a["image_id"]: a for a in pan["annotations"]}
    checked = 0
    for img in pan["images"]:
        pan_ann = by_image[img["id"]]
        ids = rgb2id(np.asarray(Image.open(synth_split / "panoptic" / pan_ann["file_name"])))
        things = [s for s in pan_ann["segments_info"] if s["category_id"] < 100]
        anns = [a for a in ins["annotations"] if a["image_id"] == img["id"]]
        assert len(anns) == len(things)
        for a in anns:
            mask = _decode(a["segmentation"], img["height"], img["width"])
            matches = [s for s in things if np.array_equal(ids == s["id"], mask)]
            assert len(matches) == 1, f"annotation {a['id']} matches no panoptic segment"
            s = matches[0]
            assert (a["category_id"], a["iscrowd"]) == (s["category_id"], s["iscrowd"])
            assert a["area"] == s["area"] and a["bbox"] == s["bbox"]
            if isinstance(a["segmentation"], list):
                assert a["iscrowd"] == 0
                kinds["polygon"] += 1
            elif a["iscrowd"]:
                assert isinstance(a["segmentation"]["counts"], list)
                kinds["crowd_rle"] += 1
            else:
                kinds["rle"] += 1
            checked += 1
    assert checked == len(ins["annotations"]) > 0
    assert all(v > 0 for v in kinds.values()), kinds


def test_semantic_png_agrees_with_panoptic(synth_split):
    pan = _load_json(synth_split / "panoptic.json")
    id_map = contiguous_id_map(pan["categories"])
    assert id_map == {1: 0, 3: 1, 5: 2, 7: 3, 101: 4, 103: 5, 105: 6, 107: 7}
    assert contiguous_id_map(SYNTHETIC_CATEGORIES) == id_map
    seen = set()
    for ann in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(synth_split / "panoptic" / ann["file_name"])))
        sem = np.asarray(Image.open(synth_split / "semantic" / ann["file_name"]))
        expected = np.full(ids.shape, 255, np.uint8)
        for s in ann["segments_info"]:
            expected[ids == s["id"]] = id_map[s["category_id"]]
        np.testing.assert_array_equal(sem, expected)
        seen |= set(np.unique(sem).tolist())
    assert seen <= set(range(8)) | {255}
    assert 255 in seen and len(seen - {255}) >= 6


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(out, *args):
        (out / "images").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(tmp_path, "train", 4)
    assert list(tmp_path.iterdir()) == []


def test_existing_and_incomplete_splits(tmp_path):
    split = generate_synthetic_dataset(tmp_path, "train", 2)
    with pytest.raises(FileExistsError, match=str(split)):
        generate_synthetic_dataset(tmp_path, "train", 2)
    mtime = (split / "info.json").stat().st_mtime_ns
    spec = register_synthetic._SplitSpec(tmp_path, "train", 2, 128)
    assert spec.ensure() == split
    assert (split / "info.json").stat().st_mtime_ns == mtime  # not regenerated
    generate_synthetic_dataset(tmp_path, "train", 3, overwrite=True)
    assert len(_load_json(split / "panoptic.json")["images"]) == 3
    junk = tmp_path / "val"
    (junk / "images").mkdir(parents=True)
    with pytest.raises(RuntimeError, match=str(junk)):
        register_synthetic._SplitSpec(tmp_path, "val", 2, 128).ensure()
    with pytest.raises(ValueError):
        generate_synthetic_dataset(tmp_path, "y", 0)


def test_stale_split_is_regenerated(tmp_path, caplog):
    """A split written with other settings (an older, smaller train split) is rebuilt."""
    split = generate_synthetic_dataset(tmp_path, "train", 2)
    first = (split / "images" / "000000.jpg").read_bytes()
    spec = register_synthetic._SplitSpec(tmp_path, "train", 3, 128)
    assert "2 images of 128 px" in spec.stale_reason()
    with caplog.at_level("WARNING"):
        assert spec.ensure() == split
    assert "Regenerating synthetic split" in caplog.text and str(split) in caplog.text
    assert spec.stale_reason() is None
    assert len(_load_json(split / "instances.json")["images"]) == 3
    assert (split / "images" / "000000.jpg").read_bytes() == first  # deterministic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]  # no leftovers
    info = _load_json(split / "info.json")
    (split / "info.json").write_text(json.dumps(dict(info, version=info["version"] - 1)))
    assert "generator version" in spec.stale_reason()


def test_regeneration_keeps_a_split_another_process_rebuilt(tmp_path):
    split = generate_synthetic_dataset(tmp_path, "train", 2)
    mtime = (split / "info.json").stat().st_mtime_ns
    out = generate_synthetic_dataset(tmp_path, "train", 3, overwrite=True, keep_if=lambda: True)
    assert out == split and (split / "info.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_lost_race_keeps_the_other_split(tmp_path, monkeypatch):
    real_write = synthetic.write_split

    def racing(out, *args):
        real_write(out, *args)
        real_write(tmp_path / "train", *args)  # another process finishes first

    monkeypatch.setattr(synthetic, "write_split", racing)
    assert generate_synthetic_dataset(tmp_path, "train", 2) == tmp_path / "train"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    assert synthetic.is_complete_split(tmp_path / "train")


def test_concurrent_ensure_is_safe(tmp_path):
    """Several callers (like DDP ranks) generating the same split at once: one wins."""
    spec = register_synthetic._SplitSpec(tmp_path, "train", 6, 96)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: spec.ensure(), range(4)))
    assert set(results) == {tmp_path / "train"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    assert len(_load_json(tmp_path / "train" / "panoptic.json")["images"]) == 6


def test_ensure_synthetic_dataset_defaults(tmp_path):
    assert register_synthetic.ensure_synthetic_dataset(tmp_path, ["val"]) == tmp_path
    info = _load_json(tmp_path / "val" / "info.json")
    assert (info["num_images"], info["image_size"]) == (60, 128)
    assert not (tmp_path / "train").exists()
    with pytest.raises(ValueError, match="test"):
        register_synthetic.ensure_synthetic_dataset(tmp_path, ["test"])


def test_cli(tmp_path):
    synthetic.main(["--root", str(tmp_path), "--num-train", "3", "--num-val", "2", "--size", "64"])
    for split, n in (("train", 3), ("val", 2)):
        d = tmp_path / "knet_synth" / split
        assert len(list((d / "images").glob("*.jpg"))) == n
    a = np.asarray(Image.open(tmp_path / "knet_synth/train/images/000000.jpg"))
    b = np.asarray(Image.open(tmp_path / "knet_synth/val/images/000000.jpg"))
    assert a.shape == (64, 64, 3) and not np.array_equal(a, b)  # splits use different seeds


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
        for split in ("train", "val"):
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
