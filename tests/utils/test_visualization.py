"""Tests of knet_d2/utils/visualization.py: metadata view, output filters, threshold, drawing.

A stand-in predictor (:class:`FakePredictor` of tests/helpers/fake_predictor.py, shared with the
demo and rendering tests) gives fixed outputs in the layout of a registered test dataset.
"""
from __future__ import annotations

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from detectron2.utils.visualizer import Visualizer

from knet_d2.rendering import ImageRenderer
from knet_d2.utils.visualization import (
    PredictionDrawer,
    drawing_metadata,
    filter_instances,
    filter_panoptic,
    select_task,
)
from tests.helpers.fake_predictor import STUFF_FIRST, THINGS_FIRST, FakePredictor, dataset_cfg
from tests.helpers.photos import small_photo


def renderer(dataset: str = STUFF_FIRST, **kwargs) -> ImageRenderer:
    """An :class:`ImageRenderer` drawing :class:`FakePredictor` outputs of ``dataset``."""
    fake = FakePredictor(dataset_cfg(dataset))
    return ImageRenderer(fake, MetadataCatalog.get(dataset), **kwargs)


def test_filter_instances_by_score_and_boxes_from_masks():
    out = FakePredictor(dataset_cfg(THINGS_FIRST))(np.zeros((40, 40, 3), np.uint8))
    kept = filter_instances(out["instances"], 0.5)
    assert len(kept) == 1 and kept.scores.tolist() == [pytest.approx(0.9)]
    assert kept.pred_classes.tolist() == [0]
    # zero boxes replaced by the mask's box: rows/cols 2..17 -> [2, 2, 18, 18]
    assert kept.pred_boxes.tensor.tolist() == [[2.0, 2.0, 18.0, 18.0]]
    assert len(out["instances"]) == 2  # the model output is untouched
    assert len(filter_instances(out["instances"], 0.0)) == 2
    assert len(filter_instances(out["instances"], 0.95)) == 0


def test_filter_panoptic_drops_low_things_to_void():
    out = FakePredictor(dataset_cfg(THINGS_FIRST))(np.zeros((40, 40, 3), np.uint8))
    seg, infos = out["panoptic_seg"]
    new_seg, new_infos = filter_panoptic(seg, infos, 0.5)
    assert [s["id"] for s in new_infos] == [1, 2]
    assert not (new_seg == 3).any()
    void = new_seg[seg == 3].unique().tolist()
    assert len(void) == 1 and void[0] not in (1, 2)
    assert (seg == 3).any() and len(infos) == 3  # input untouched


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_threshold_removes_low_score_from_drawing(task):
    black = np.zeros((128, 128, 3), np.uint8)
    low_region = (slice(74, 120), slice(74, 120))  # inside the score-0.2 "car" block
    high_region = (slice(8, 56), slice(8, 56))  # inside the score-0.9 "person" block

    def changed(img, region):  # share of pixels that are no longer black (labels are small)
        return float((img[region].max(axis=-1) > 8).mean())

    drawn = {}
    for thr in (0.1, 0.5):
        np.random.seed(0)  # D2 picks random instance colours; a near-black one would look "undrawn"
        _, vis = renderer(THINGS_FIRST, task=task, confidence_threshold=thr).run_on_image(black)
        drawn[thr] = vis.get_image()
    assert changed(drawn[0.1], low_region) > 0.6  # drawn when the threshold is below its score
    assert changed(drawn[0.5], low_region) < 0.2  # not drawn when above
    assert changed(drawn[0.5], high_region) > 0.6  # the confident one stays


def test_task_switch_and_missing_output():
    preds, vis = renderer(THINGS_FIRST, task="semantic").run_on_image(small_photo(48, 64))
    assert vis.get_image().shape == (48, 64, 3)
    assert select_task(preds, "auto") == "panoptic_seg"
    assert select_task({"sem_seg": preds["sem_seg"]}, "auto") == "sem_seg"
    assert select_task({"sem_seg": 0, "instances": 0}, "auto") == "instances"
    with pytest.raises(ValueError, match="needs 'panoptic_seg'"):
        select_task({"instances": preds["instances"]}, "panoptic")
    with pytest.raises(ValueError, match="unknown task"):
        PredictionDrawer(MetadataCatalog.get(THINGS_FIRST), task="boxes")


# ------------------------------------------------------------------------------------ thing ids
def test_non_contiguous_thing_ids_draw_without_index_error():
    meta = MetadataCatalog.get(STUFF_FIRST)
    out = FakePredictor(dataset_cfg(STUFF_FIRST))(np.zeros((48, 64, 3), np.uint8))
    seg, infos = out["panoptic_seg"]
    # the defect being fixed: D2 indexes thing_classes with the contiguous id 3
    with pytest.raises(IndexError):
        Visualizer(np.zeros((48, 64, 3), np.uint8), meta).draw_panoptic_seg(seg, infos)
    view = drawing_metadata(meta)
    assert view.thing_classes[2] == "person" and view.thing_classes[3] == "car"
    assert view.thing_classes[0] == "sky" and len(view.thing_colors) == 4
    assert view.stuff_classes == meta.stuff_classes
    assert MetadataCatalog.get(STUFF_FIRST).thing_classes == ["person", "car"]  # not modified
    for task in ("panoptic", "instance", "semantic"):
        _, vis = renderer(STUFF_FIRST, task=task, confidence_threshold=0.0).run_on_image(
            small_photo(48, 64)
        )
        assert vis.get_image().shape == (48, 64, 3)


def test_things_first_metadata_is_used_as_is():
    meta = MetadataCatalog.get(THINGS_FIRST)
    assert drawing_metadata(meta) is meta
