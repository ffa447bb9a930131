"""knet_d2.data.synthetic: the synthetic dataset generator (splits on disk: determinism, files
that agree with each other, interrupted / stale / concurrent generation, the command line)."""

from __future__ import annotations

import filecmp
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

import knet_d2  # noqa: F401  (registers the dataset names)
from knet_d2.data import synthetic
from knet_d2.data.datasets import register_synthetic
from knet_d2.data.datasets.register_custom import (
    contiguous_id_map,
)
from knet_d2.data.synthetic import SYNTHETIC_CATEGORIES, generate_synthetic_dataset
from tests.helpers.catalogs import unregister_datasets

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


def test_split_with_another_seed_is_regenerated(tmp_path, caplog):
    split = generate_synthetic_dataset(tmp_path, "big", 2, seed=5)
    spec = register_synthetic._SplitSpec(tmp_path, "big", 2, 128, seed=6)
    assert "with seed 5" in spec.stale_reason() and "with seed 6" in spec.stale_reason()
    with caplog.at_level("WARNING"):
        spec.ensure()
    assert "Regenerating synthetic split" in caplog.text
    assert _load_json(split / "info.json")["seed"] == 6 and spec.stale_reason() is None
    assert register_synthetic._SplitSpec(tmp_path, "big", 2, 128).generator_seed == (
        synthetic.split_default_seed("big"))


def test_seeded_split_extends_the_split_whose_seed_it_takes(tmp_path):
    """A larger copy of ``train`` (like ``train16k``): its first images are train's images."""
    prefix = "knet_test_seeded"
    train_seed = synthetic.split_default_seed("train")
    names = register_synthetic.register_synthetic_datasets(
        tmp_path, {"train": 3, "bigger": 5}, prefix=prefix, seeds={"bigger": train_seed}
    )
    try:
        small = DatasetCatalog.get(f"{prefix}_panoptic_train")
        large = DatasetCatalog.get(f"{prefix}_panoptic_bigger")
        assert len(small) == 3 and len(large) == 5
        for a, b in zip(small, large):
            for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
                assert Path(a[key]).parent.parent.name == "train"
                assert Path(b[key]).parent.parent.name == "bigger"
                assert filecmp.cmp(a[key], b[key], shallow=False), key
            assert a["segments_info"] == b["segments_info"]
        assert _load_json(tmp_path / "bigger" / "info.json")["seed"] == train_seed
    finally:
        unregister_datasets(names)
    with pytest.raises(ValueError, match="not registered: \\['other'\\]"):
        register_synthetic.register_synthetic_datasets(
            tmp_path, {"train": 3}, prefix=prefix, seeds={"other": 1}
        )


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
    with pytest.raises(ValueError, match="test.*'train16k'"):
        register_synthetic.ensure_synthetic_dataset(tmp_path, ["test"])
    large = register_synthetic._default_spec(tmp_path, "train16k")
    assert (large.split_dir, large.num_images, large.image_size) == (
        tmp_path / "train16k", 16000, 128)
    assert large.generator_seed == synthetic.split_default_seed("train")


def test_cli(tmp_path):
    synthetic.main(["--root", str(tmp_path), "--num-train", "3", "--num-val", "2", "--size", "64"])
    for split, n in (("train", 3), ("val", 2)):
        d = tmp_path / "knet_synth" / split
        assert len(list((d / "images").glob("*.jpg"))) == n
    a = np.asarray(Image.open(tmp_path / "knet_synth/train/images/000000.jpg"))
    b = np.asarray(Image.open(tmp_path / "knet_synth/val/images/000000.jpg"))
    assert a.shape == (64, 64, 3) and not np.array_equal(a, b)  # splits use different seeds
