"""The instance error breakdown (benchmarks/instance_error_breakdown.py): one prediction per
kernel, relabelling and re-masking from the ground truth, mask recall, and the three views
through D2's COCOEvaluator on a small generated split."""
from __future__ import annotations

import json

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.structures import BitMasks, Instances

import knet_d2  # noqa: F401  (registers the dataset names)
from benchmarks import instance_error_breakdown as eb
from tests.helpers.catalogs import registered_synthetic_splits
from tests.helpers.tables import table_row

PREFIX = "knet_test_breakdown"


def _instances(masks, scores, classes, size=(8, 8)) -> Instances:
    out = Instances(size)
    out.pred_masks = torch.stack(masks)
    out.scores = torch.tensor(scores)
    out.pred_classes = torch.tensor(classes)
    out.pred_boxes = BitMasks(out.pred_masks).get_bounding_boxes()
    return out


def _box(y0, y1, x0, x1, size=8):
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_one_prediction_per_kernel_relabelled_and_remasked():
    a, b = _box(0, 4, 0, 4), _box(4, 8, 4, 8)
    # kernel a twice (classes 2 then 0), kernel b once; sorted by score like the model's top-k
    pred = _instances([a, b, a], [0.9, 0.5, 0.3], [2, 1, 0])
    masks, scores, classes = eb.kernel_predictions(pred)
    assert len(masks) == 2 and scores.tolist() == pytest.approx([0.9, 0.5])
    assert classes.tolist() == [2, 1] and torch.equal(masks[0], a)
    # not sorted by score: still each kernel's best
    _, scores, classes = eb.kernel_predictions(_instances([a, b, a], [0.3, 0.5, 0.9], [0, 1, 2]))
    assert sorted(zip(scores.tolist(), classes.tolist())) == [(0.5, 1), (pytest.approx(0.9), 2)]

    gt_masks = torch.stack([_box(0, 4, 0, 3), _box(0, 2, 6, 8)])  # overlaps a; b overlaps none
    gt_classes = torch.tensor([3, 1])
    relabelled = eb.relabel_from_ground_truth(pred, gt_masks, gt_classes)
    assert relabelled.pred_classes.tolist() == [3, 1]  # a -> gt 0's class; b keeps its own
    assert relabelled.scores.tolist() == pytest.approx([0.9, 0.5])

    remasked = eb.remask_from_ground_truth(pred, gt_masks)
    assert torch.equal(remasked.pred_masks[0], gt_masks[0])
    assert torch.equal(remasked.pred_masks[2], gt_masks[0])
    assert torch.equal(remasked.pred_masks[1], b)  # no overlap: kept
    assert remasked.pred_classes.tolist() == [2, 1, 0]

    # a covers gt 0 at IoU 12/16 = 0.75; nothing covers gt 1
    assert eb.mask_recall(pred, gt_masks) == [1, 1]
    assert eb.mask_recall(pred, gt_masks, (0.8,)) == [0]
    assert eb.mask_recall(pred, gt_masks[:0]) == [0, 0]


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("breakdown")
    with registered_synthetic_splits(root, {"val": 4}, PREFIX) as names:
        yield names


class _ExactMasksWrongFirstClass:
    """Stands in for a model: every ground-truth mask, first with a wrong class (score 0.9),
    then with its true class (score 0.2). ``eval()`` as a model has."""

    def __init__(self, dataset: str):
        self.gt = {}
        for d in DatasetCatalog.get(dataset):
            annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
            self.gt[d["image_id"]] = annotations_to_instances(annos, (d["height"], d["width"]),
                                                              mask_format="bitmask")

    def eval(self):
        return self

    def __call__(self, inputs):
        outs = []
        for d in inputs:
            gt = self.gt[d["image_id"]]
            n = len(gt)
            masks = gt.gt_masks.tensor
            pred = _instances([*masks, *masks], [0.9] * n + [0.2] * n,
                              [*((gt.gt_classes + 1) % 4).tolist(), *gt.gt_classes.tolist()],
                              size=(d["height"], d["width"]))
            outs.append({"instances": pred})
        return outs


def test_breakdown_of_a_model_with_exact_masks_and_wrong_top_classes(small_split, tmp_path):
    dataset = f"{PREFIX}_instance_val"
    model = _ExactMasksWrongFirstClass(dataset)
    loader = [[{"image_id": d["image_id"], "height": d["height"], "width": d["width"],
                "file_name": d["file_name"]}] for d in DatasetCatalog.get(dataset)]
    res = eb.breakdown(model, loader, dataset, str(tmp_path))
    ap = res["mask_ap"]
    assert ap["classes from the ground truth"]["AP"] == pytest.approx(100.0)
    assert ap["as predicted"]["AP"] < 60.0  # every true class ranked below a wrong one
    assert ap["masks from the ground truth"]["AP"] == pytest.approx(ap["as predicted"]["AP"])
    assert res["mask_recall"]["iou>=0.5"] == pytest.approx(100.0)
    assert res["mask_recall"]["instances"] == sum(len(g) for g in model.gt.values())


def test_cli_loads_the_weights_and_writes_the_header_views_and_table(small_split, tmp_path,
                                                                       capsys):
    from benchmarks.report import format_cell
    from tests.helpers.paths import REPO_ROOT
    from tests.helpers.tiny_training import save_untrained

    config = str(REPO_ROOT / "configs/synthetic/instance/knet_R18_tiny.yaml")
    weights = save_untrained(config, tmp_path)
    out = tmp_path / "cli"
    assert eb.main(["--config-file", config, "--weights", str(weights),
                    "--dataset", f"{PREFIX}_instance_val", "--output", str(out),
                    "--threads", "1"]) == 0
    saved = json.loads((out / "instance_error_breakdown.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.instance_error_breakdown")
    assert {"date", "commit", "machine"} <= set(saved)
    assert saved["weights"].endswith("untrained.pth")
    assert set(saved["mask_ap"]) == {"as predicted", "classes from the ground truth",
                                     "masks from the ground truth"}
    annos = [a for d in DatasetCatalog.get(f"{PREFIX}_instance_val") for a in d["annotations"]]
    assert saved["mask_recall"]["instances"] == sum(not a.get("iscrowd", 0) for a in annos)
    assert sum(a.get("iscrowd", 0) for a in annos) >= 1  # the crowd regions are left out
    row = table_row(capsys.readouterr().out, "masks from the ground truth")
    assert row == table_row("\n".join(saved["table"]), "masks from the ground truth")
    assert row[1] == format_cell(saved["mask_ap"]["masks from the ground truth"]["AP"])
