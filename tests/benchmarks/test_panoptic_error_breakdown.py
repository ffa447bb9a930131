"""The panoptic error breakdown (benchmarks/panoptic_error_breakdown.py): PQ's matching with
void and crowd, the counts by visible extent, the pooled RQ, and the command line on a small
generated split."""
from __future__ import annotations

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

import knet_d2  # noqa: F401  (registers the dataset names)
from benchmarks import panoptic_error_breakdown as peb
from tests.helpers.catalogs import registered_synthetic_splits
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny_training import save_untrained

PREFIX = "knet_test_pan_breakdown"


def _scene():
    """A 40 x 40 ground truth: thing 1 (class 0, 20 x 20), thing 2 (class 1, 10 x 10),
    thing 3 (class 2, 4 x 4), a void strip (id 0) and stuff (id 9) elsewhere."""
    gt = np.full((40, 40), 9, np.uint32)
    gt[0:20, 0:20] = 1
    gt[25:35, 25:35] = 2
    gt[0:4, 30:34] = 3
    gt[38:40, :] = 0
    things = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1},
              {"id": 3, "category_id": 2}]
    return gt, things


def test_counts_true_wrong_class_unmatched_and_extent_bins():
    gt, things = _scene()
    pred = np.zeros((40, 40), np.int32)
    pred[0:20, 0:18] = 5    # thing 1 at IoU 0.9, class 0: true
    pred[25:35, 25:31] = 6  # thing 2 at IoU 0.6, class 3: wrong class
    pred[20:24, 0:4] = 7    # on stuff: unmatched
    pred[37:40, 10:14] = 8  # 8 of its 12 pixels on void: not counted
    preds = [{"id": 5, "category_id": 0}, {"id": 6, "category_id": 3},
             {"id": 7, "category_id": 1}, {"id": 8, "category_id": 1}]
    c = peb.count_image(gt, things, pred, preds, gt == 0)
    # extents 20, 10, 4 px -> bins >=16 (16-32), 8-16, 0-8
    assert c["total"].tolist() == [1, 1, 1, 0]
    assert c["found"].tolist() == [0, 1, 1, 0]
    assert c["found_same_class"].tolist() == [0, 0, 1, 0]
    assert c["pred"].tolist() == [1, 1, 1]
    assert c["unmatched"].tolist() == [0, 0, 1]  # segment 7 lies on stuff
    s = peb.summarize(c)
    assert s["unmatched_where"] == {"on_a_found_thing": 0, "on_a_thing_not_found": 0,
                                    "mostly_off_the_things": 1}
    assert s["gt_things"] == [1, 1, 1, 0] and s["found_pct"] == pytest.approx(200 / 3)
    # TP 1, FP 2, FN 2 -> 1 / (1 + 1 + 1); perfect classes: TP 2, FP 1, FN 1 -> 2 / 3
    assert s["pooled_rq"] == pytest.approx(100 / 3)
    assert s["pooled_rq_perfect_classes"] == pytest.approx(200 / 3)
    assert s["wrong_class_pct_of_matched"] == pytest.approx(50.0)
    assert s["extent_bins"] == ["0-8px", "8-16px", "16-32px", ">=32px"]


def test_unmatched_segments_by_where_they_lie():
    gt, things = _scene()
    pred = np.zeros((40, 40), np.int32)
    pred[0:20, 0:18] = 5    # thing 1 (IoU 0.81 once 9 takes its corner): true
    pred[0:6, 0:6] = 9      # a fragment on thing 1 (taken from 5): a duplicate of a found thing
    pred[25:30, 25:35] = 6  # half of thing 2 (IoU 0.5, not > 0.5): on a thing not found
    pred[0:4, 30:38] = 7    # thing 3 (16 px) and 16 px of stuff: half on things -> off
    pred[20:24, 20:24] = 8  # stuff only
    preds = [{"id": k, "category_id": 0} for k in (5, 9, 6, 7, 8)]
    c = peb.count_image(gt, things, pred, preds, gt == 0)
    assert c["pred"].tolist() == [1, 0, 4]
    assert c["unmatched"].tolist() == [1, 1, 2]
    assert sum(peb.summarize(c)["unmatched_where"].values()) == 4


def test_void_pixels_leave_the_union_as_in_pq():
    gt, things = _scene()
    pred = np.zeros((40, 40), np.int32)
    pred[25:40, 25:35] = 6  # thing 2 (100 px) plus 30 px of stuff and 20 px of void
    g, p = peb.segment_masks(gt, [2]), peb.segment_masks(pred, [6])
    iou = peb.thing_iou(g, p, (gt == 0).reshape(-1))
    assert iou[0, 0] == pytest.approx(100 / 130)  # 150 - 20 void pixels in the union
    assert peb.thing_iou(g, p, np.zeros(gt.size, bool))[0, 0] == pytest.approx(100 / 150)
    assert peb.segment_masks(gt, []).shape == (0, gt.size)
    assert peb.visible_extent(gt == 2) == 10 and peb.visible_extent(gt == 77) == 0


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("pan_breakdown")
    with registered_synthetic_splits(root, {"val": 3}, PREFIX) as names:
        yield names


def test_cli_writes_the_header_and_counts_every_ground_truth_thing(small_split, tmp_path,
                                                                     capsys):
    config = str(REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml")
    weights = save_untrained(config, tmp_path)
    out = tmp_path / "cli"
    dataset = f"{PREFIX}_panoptic_val"
    args = ["--config-file", config, "--weights", str(weights),
            "--dataset", dataset, "--output", str(out), "--threads", "1"]
    assert peb.main(args) == 0
    saved = json.loads((out / "panoptic_error_breakdown.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.panoptic_error_breakdown")
    assert {"date", "commit", "machine"} <= set(saved)
    things = [s for d in DatasetCatalog.get(dataset) for s in d["segments_info"]
              if s["isthing"] and not s.get("iscrowd", 0)]
    assert sum(saved["gt_things"]) == len(things) > 0
    assert all(f <= t for f, t in zip(saved["found"], saved["gt_things"]))
    assert "pooled RQ" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # never overwrites a result
        peb.main(args)
