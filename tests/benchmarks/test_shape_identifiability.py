"""Shape identifiability (benchmarks/shape_identifiability.py): the objects and their crops, the
accuracy bins, the classifier's training loop, and the AP of learned classes through D2's
COCOEvaluator on a small generated split."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import annotations_to_instances

import knet_d2  # noqa: F401  (registers the dataset names)
from benchmarks import shape_identifiability as si
from benchmarks.report import format_cell
from knet_d2.data.synthetic import split_default_seed
from tests.helpers.catalogs import registered_synthetic_splits
from tests.helpers.tables import table_row

PREFIX = "knet_test_identifiability"


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("identifiability")
    with registered_synthetic_splits(root, {"val": 4}, PREFIX) as names:
        yield names


def test_objects_are_those_of_the_written_split(small_split):
    """The image is the split's JPEG file, pixel for pixel; the things are its annotations
    (same masks, same contiguous classes), then the distractors (label 4)."""
    seed = split_default_seed("val")
    dicts = {d["image_id"]: d for d in DatasetCatalog.get(f"{PREFIX}_instance_val")}
    n_distractors = 0
    for i in range(4):
        image, objects = si.render_objects(i, 128, seed)
        on_disk = cv2.imread(dicts[i]["file_name"], cv2.IMREAD_COLOR)[:, :, ::-1]
        assert np.array_equal(image, on_disk)
        things = [o for o in objects if o[1] != si.DISTRACTOR]
        annos = dicts[i]["annotations"]
        assert sorted(o[1] for o in things) == sorted(a["category_id"] for a in annos)
        assert sum(o[2] for o in things) == sum(a.get("iscrowd", 0) for a in annos)
        gt = annotations_to_instances(annos, (128, 128), mask_format="bitmask")
        assert sorted(int(o[0].sum()) for o in things) == sorted(
            gt.gt_masks.tensor.sum((1, 2)).tolist())
        n_distractors += len(objects) - len(things)
    assert n_distractors > 0  # the fixture's images hold distractors


def test_crop_is_centred_on_the_visible_box_and_scale_normalised():
    image = np.zeros((64, 64, 3), np.uint8)
    image[10:18, 40:48] = 200  # an 8 x 8 square
    small = np.zeros((64, 64), bool)
    small[10:18, 40:48] = True
    big = np.zeros((64, 64), bool)
    big[20:52, 4:36] = True  # 32 x 32
    crops, extent = si.crop_objects(image, [small, big])
    assert crops.shape == (2, 4, si.CROP, si.CROP) and extent.tolist() == [8, 32]
    c = si.CROP // 2
    for k in range(2):  # the mask fills the same central part of the crop at either size
        mask = crops[k, 3]
        assert mask[c, c] > 0.99 and mask[0, 0] < 0.01 and mask[-1, -1] < 0.01
        inside = (mask > 0.5).sum().item()
        # window 1.5 x side + 2 px: (8 / 14)^2 = 0.33 and (32 / 50)^2 = 0.41 of the crop
        assert 0.28 * si.CROP ** 2 < inside < 0.45 * si.CROP ** 2
    assert crops[0, 0, c, c] == pytest.approx(200, abs=1)  # RGB of the object
    assert crops[1, 0, c, c] == pytest.approx(0, abs=1)  # the big box is black
    empty_crops, empty_extent = si.crop_objects(image, [])
    assert empty_crops.shape == (0, 4, si.CROP, si.CROP) and len(empty_extent) == 0


def _objs(labels, extent):
    n = len(labels)
    return si.ObjectCrops(torch.zeros(n, 4, si.CROP, si.CROP), torch.tensor(labels),
                          torch.tensor(extent), torch.zeros(n, dtype=torch.int64),
                          torch.zeros(n, dtype=torch.bool))


def test_accuracy_by_extent_and_confusion():
    objs = _objs([0, 1, 2, 3, 4, 0], [4, 10, 20, 40, 7, 30])
    pred = torch.tensor([0, 2, 2, 3, 4, 1])
    acc = si.accuracy_by_extent(pred, objs)
    assert acc["all"] == pytest.approx(400 / 6)
    assert (acc["<8"], acc["n_<8"]) == (100.0, 2)
    assert (acc["8-16"], acc["n_8-16"]) == (0.0, 1)
    assert (acc["16-32"], acc["n_16-32"]) == (50.0, 2)
    assert (acc[">=32"], acc["n_>=32"]) == (100.0, 1)
    m = si.confusion(pred, objs.labels)
    assert m[0] == [1, 1, 0, 0, 0] and m[1] == [0, 0, 1, 0, 0] and sum(map(sum, m)) == 6


def test_classifier_trains_and_records_its_curve():
    """A toy set (label = the brightness of the crop, which flips and rotations keep) is learnt
    by the loop."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (256,), generator=g)
    crops = torch.rand(256, 4, si.CROP, si.CROP, generator=g) * 30
    crops[:, :3] += (40 + 60 * labels.float())[:, None, None, None]
    objs = si.ObjectCrops(crops, labels, torch.full((256,), 20), torch.arange(256) // 8,
                          torch.zeros(256, dtype=torch.bool))
    model, curve = si.train_classifier(objs, objs, epochs=3, batch=32, lr=3e-3)
    assert [r["epoch"] for r in curve] == [1, 2, 3]
    assert curve[-1]["images_seen"] == 3 * 32
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    assert curve[-1]["held_out"]["all"] > 90.0


def test_map_of_exact_masks_true_and_learned_classes(small_split, tmp_path):
    dataset = f"{PREFIX}_instance_val"
    objs = si.collect(range(4), 128, split_default_seed("val"), keep_masks=True)
    masks = si.decode_masks(objs, "exact", range(4))
    perfect = si.evaluate_map(dataset, objs, masks, None, str(tmp_path / "a"), "true")
    assert perfect["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="classes must be"):
        si.evaluate_map(dataset, objs, masks, None, str(tmp_path / "x"), "perfect")
    # coarse masks: scored by their IoU they rank better than at a tied score of 1
    coarse = si.decode_masks(objs, "knet_loss", range(4))
    tied = si.evaluate_map(dataset, objs, coarse, None, str(tmp_path / "d"), "true")
    ranked = si.evaluate_map(dataset, objs, coarse, None, str(tmp_path / "e"), "true_iou")
    assert 0.0 < tied["AP"] < 100.0 and ranked["AP"] > tied["AP"]
    onehot = torch.nn.functional.one_hot(objs.labels, 5).float()
    assert si.evaluate_map(dataset, objs, masks, onehot, str(tmp_path / "b"))["AP"] == \
        pytest.approx(100.0)  # distractors and wrong classes all score 0: ranked last
    wrong = torch.nn.functional.one_hot((objs.labels + 1) % 4, 5).float()
    # every true class at score 0, below a wrong one: ranked after all the false positives
    assert si.evaluate_map(dataset, objs, masks, wrong, str(tmp_path / "c"))["AP"] < 30.0


def test_cli_writes_the_header_curve_and_table(small_split, tmp_path, capsys):
    out = tmp_path / "cli"
    assert si.main(["--dataset", f"{PREFIX}_instance_val", "--num-train", "6", "--num-eval", "5",
                    "--epochs", "1", "--threads", "1", "--output", str(out)]) == 0
    saved = json.loads((out / "shape_identifiability.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.shape_identifiability --dataset")
    assert {"date", "commit", "machine"} <= set(saved)
    assert len(saved["curve"]) == 1 and saved["curve"][0]["images_seen"] == 6
    assert saved["mask_ap"]["exact masks, true classes"]["AP"] == pytest.approx(100.0)
    assert set(saved["mask_ap"]) == {
        "exact masks, true classes", "exact masks, learned classes", "knet_loss masks, true "
        "classes", "knet_loss masks, true classes, scored by mask IoU",
        "knet_loss masks, learned classes"}
    rows = saved["confusion"]["rows_true_cols_pred"]
    assert sum(map(sum, rows)) == saved["final_accuracy"]["n_all"]
    printed, table = capsys.readouterr().out, "\n".join(saved["table"])
    row = table_row(printed, "knet_loss masks, learned classes")
    assert row == table_row(table, "knet_loss masks, learned classes")
    assert row[1] == format_cell(saved["mask_ap"]["knet_loss masks, learned classes"]["AP"])
    epoch = table_row(printed, "1")  # the one epoch's accuracy row
    assert epoch[2] == format_cell(saved["curve"][0]["held_out"]["all"])
