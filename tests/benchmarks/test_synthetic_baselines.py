"""The synthetic baselines (benchmarks/synthetic_baselines.py) and their evaluators
(benchmarks/synthetic_evaluators.py): colour classifier, label map -> D2 outputs, end-to-end
scores on a small generated split."""
from __future__ import annotations

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import knet_d2  # noqa: F401  (registers the dataset names)
from benchmarks import synthetic_baselines as sb
from benchmarks.synthetic_evaluators import build_synthetic_evaluator
from tests.helpers.catalogs import registered_synthetic_splits

PREFIX = "knet_test_baselines"


def test_colour_classifier_learns_the_majority_class_of_each_colour():
    clf = sb.ColourHistogramClassifier(num_classes=3, bins=8)
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, 2:] = (200, 10, 10)
    labels = np.zeros((4, 4), np.uint8)
    labels[:, 2:] = 2
    labels[0, 2] = 1  # outvoted in its colour bin
    labels[3, 0] = 255  # ignored
    clf.update(image, labels)
    np.testing.assert_array_equal(clf.class_pixels, [7, 1, 7])
    pred = clf.predict(image)
    np.testing.assert_array_equal(pred[:, :2], 0)
    np.testing.assert_array_equal(pred[:, 2:], 2)
    unseen = np.full((1, 1, 3), 100, np.uint8)  # an empty bin: the most frequent class
    assert clf.predict(unseen)[0, 0] == 0
    with pytest.raises(ValueError, match="bins"):
        sb.ColourHistogramClassifier(3, bins=30)
    with pytest.raises(RuntimeError, match="update"):
        sb.ColourHistogramClassifier(3).predict(image)


def test_semantic_to_outputs_components_and_segments():
    labels = np.full((12, 12), 5, np.int64)  # stuff class 5 (contiguous, 2 things)
    labels[:, 9:] = 3
    labels[1:4, 1:4] = 0  # two separate components of thing 0 ...
    labels[6:9, 6:9] = 0
    labels[10, 0] = 1  # ... and a 1 px component of thing 1, dropped
    out = sb.semantic_to_outputs(labels, num_things=2, num_classes=6)
    sem = out["sem_seg"]
    assert sem.shape == (6, 12, 12)
    np.testing.assert_array_equal(sem.argmax(0).numpy(), labels)
    pan, segments = out["panoptic_seg"]
    assert [(s["category_id"], s["isthing"]) for s in segments] == [
        (0, True), (0, True), (3, False), (5, False)]
    for s in segments:
        assert (pan.numpy() == s["id"]).any()
    assert pan[10, 0] == 0  # dropped component: unlabeled
    inst = out["instances"]
    assert len(inst) == 2 and inst.pred_classes.tolist() == [0, 0]
    assert inst.scores.tolist() == [1.0, 1.0]
    assert sorted(inst.pred_boxes.tensor.tolist()) == [[1, 1, 4, 4], [6, 6, 9, 9]]
    empty = sb.semantic_to_outputs(np.full((5, 5), 4, np.int64), 2, 6)["instances"]
    assert len(empty) == 0 and empty.pred_masks.shape == (0, 5, 5)


@pytest.fixture(scope="module")
def split_names(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    with registered_synthetic_splits(root, {"train": 30, "val": 6}, PREFIX) as names:
        yield names


def test_ground_truth_labels_score_full_marks_through_the_same_path(split_names, tmp_path):
    """Feeding the true label maps through semantic_to_outputs gives mIoU 100 and stuff PQ 100
    (things fall short only where same-class instances touch), with per-class PQ filled in."""
    val = f"{PREFIX}_panoptic_val"
    evaluator = build_synthetic_evaluator(val, ("panoptic", "instance", "semantic"), str(tmp_path))
    evaluator.reset()
    meta = MetadataCatalog.get(val)
    for d in DatasetCatalog.get(val):
        _, labels = sb._image_and_labels(d)
        evaluator.process([d], [sb.semantic_to_outputs(labels, 4, 8)])
    res = sb.flatten_results(evaluator.evaluate())
    assert res["sem_seg/mIoU"] == pytest.approx(100.0)
    assert res["panoptic_seg/PQ_st"] == pytest.approx(100.0)
    assert 50.0 < res["panoptic_seg/PQ_th"] <= 100.0 and res["segm/AP"] > 50.0
    for name in meta.stuff_classes[4:]:
        if f"panoptic_seg/PQ-{name}" in res:
            assert res[f"panoptic_seg/PQ-{name}"] == pytest.approx(100.0)
    assert sum(f"panoptic_seg/PQ-{c}" in res for c in meta.stuff_classes) >= 6


def test_baselines_end_to_end(split_names, tmp_path, monkeypatch, capsys):
    res = sb.evaluate_baselines(f"{PREFIX}_sem_seg_train", f"{PREFIX}_panoptic_val",
                                str(tmp_path))
    colour, majority = res["colour_only"], res["majority_stuff"]
    assert res["details"]["majority_stuff_class"] in ("sky", "grass", "wall", "water")
    for m in (colour, majority):
        for key in ("panoptic_seg/PQ", "panoptic_seg/PQ_th", "panoptic_seg/PQ_st", "segm/AP",
                    "sem_seg/mIoU", "panoptic_seg/PQ-circle", "sem_seg/IoU-water"):
            assert 0.0 <= m[key] <= 100.0, key
    # the majority class: no thing predicted, one stuff class right
    assert majority["segm/AP"] == 0.0 and majority["panoptic_seg/PQ_th"] == 0.0
    assert majority["sem_seg/mIoU"] < 100.0 / 8
    # colour does not identify stuff (v2 set): far from a usable segmentation
    assert colour["sem_seg/mIoU"] < 30.0 and colour["panoptic_seg/PQ_st"] < 20.0

    out = tmp_path / "cli"
    assert sb.main(["--train", f"{PREFIX}_sem_seg_train", "--val", f"{PREFIX}_panoptic_val",
                    "--output", str(out)]) == 0
    saved = json.loads((out / "baselines.json").read_text())
    assert saved["colour_only"] == pytest.approx(colour, nan_ok=True)
    assert "[baselines] colour_only: PQ" in capsys.readouterr().out
