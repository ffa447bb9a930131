"""A stand-in for D2's DefaultPredictor with fixed outputs, and the two test datasets it draws.

Shared by the visualization, demo and rendering tests. Importing this module registers the
metadata of :data:`THINGS_FIRST` and :data:`STUFF_FIRST` (AsyncPredictor workers import it too).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

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
