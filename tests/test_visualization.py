"""Tests of knet_d2/utils/visualization.py: metadata view, output filters, threshold, drawing.

A stand-in predictor (:class:`FakePredictor`, shared with the demo and rendering tests) gives
fixed outputs in the layout of a registered test dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

from knet_d2.rendering import ImageRenderer
from knet_d2.utils.visualization import (
    PredictionDrawer,
    drawing_metadata,
    filter_instances,
    filter_panoptic,
    select_task,
)

THINGS_FIRST = "knet_demo_test_things_first"
STUFF_FIRST = "knet_demo_test_stuff_first"


def _register_metadata() -> None:
    MetadataCatalog.get(THINGS_FIRST).set(
        thing_classes=["person", "car"],
        stuff_classes=["person", "car", "sky"],
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        stuff_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
    )
    # ADE20K-like: stuff classes come first, thing ids are 2 and 3.
    MetadataCatalog.get(STUFF_FIRST).set(
        thing_classes=["person", "car"],
        stuff_classes=["sky", "grass", "person", "car"],
        thing_dataset_id_to_contiguous_id={10: 2, 20: 3},
        stuff_dataset_id_to_contiguous_id={1: 0, 2: 1, 10: 2, 20: 3},
    )


_register_metadata()


class FakePredictor:
    """Stand-in for D2's DefaultPredictor: fixed outputs in the layout of the cfg's dataset.

    Top-left block: thing "person" with score 0.9; bottom-right block: thing "car" with score 0.2;
    the rest: the first stuff class. Raises on 1-pixel-high images. Picklable (AsyncPredictor
    workers build it from the cfg).
    """

    def __init__(self, cfg) -> None:
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.thing_ids = sorted(meta.thing_dataset_id_to_contiguous_id.values())
        all_ids = sorted(meta.stuff_dataset_id_to_contiguous_id.values())
        self.stuff_id = [i for i in all_ids if i not in self.thing_ids][0]
        self.num_classes = len(all_ids)
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Dict[str, object]:
        self.calls += 1
        h, w = image.shape[:2]
        if h == 1:
            raise ValueError("boom: 1-pixel-high image")
        high = torch.zeros(h, w, dtype=torch.bool)
        high[2 : h // 2 - 2, 2 : w // 2 - 2] = True
        low = torch.zeros(h, w, dtype=torch.bool)
        low[h // 2 + 2 : h - 2, w // 2 + 2 : w - 2] = True
        inst = Instances((h, w))
        inst.pred_masks = torch.stack([high, low])
        inst.scores = torch.tensor([0.9, 0.2])
        inst.pred_classes = torch.tensor(self.thing_ids[:2])
        inst.pred_boxes = Boxes(torch.zeros(2, 4))  # mask models may emit zero boxes
        seg = torch.ones(h, w, dtype=torch.int32)
        seg[high] = 2
        seg[low] = 3
        infos = [
            {"id": 1, "category_id": self.stuff_id, "isthing": False},
            {"id": 2, "category_id": self.thing_ids[0], "isthing": True, "score": 0.9},
            {"id": 3, "category_id": self.thing_ids[1], "isthing": True, "score": 0.2},
        ]
        sem = torch.zeros(self.num_classes, h, w)
        sem[self.stuff_id] = 1.0
        sem[self.thing_ids[0]][high] = 2.0
        sem[self.thing_ids[1]][low] = 2.0
        return {"instances": inst, "panoptic_seg": (seg, infos), "sem_seg": sem}


def dataset_cfg(dataset: str = STUFF_FIRST):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.DATASETS.TEST = (dataset,)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def renderer(dataset: str = STUFF_FIRST, **kwargs) -> ImageRenderer:
    """An :class:`ImageRenderer` drawing :class:`FakePredictor` outputs of ``dataset``."""
    fake = FakePredictor(dataset_cfg(dataset))
    return ImageRenderer(fake, MetadataCatalog.get(dataset), **kwargs)


def small_photo(h: int = 72, w: int = 96, which: str = "astronaut") -> np.ndarray:
    """A small real BGR photo from scikit-image's samples."""
    import skimage.data

    rgb = getattr(skimage.data, which)()
    return cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (w, h), interpolation=cv2.INTER_AREA)


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


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
