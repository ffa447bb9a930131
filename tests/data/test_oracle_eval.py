"""Ground truth fed back as predictions through D2's evaluators must score 100.

Covers the synthetic splits and the real samples in ../shared/data (COCO instance, COCO
panoptic, ADE20K semantic), registered with knet_d2's helpers. Each evaluator also gets one
perturbed prediction set, which must score below 100 (so these tests can fail).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id
from PIL import Image

import knet_d2  # noqa: F401  (registers the dataset names)
from knet_d2.data.datasets.ade20k import convert_ade20k_split
from knet_d2.data.datasets.coco_panoptic_semseg import convert_panoptic_to_semantic
from knet_d2.data.datasets.register_custom import (
    register_instance_dataset,
    register_panoptic_dataset,
    register_sem_seg_dataset,
)
from knet_d2.data.datasets.register_synthetic import (
    ensure_synthetic_for_datasets,
    register_synthetic_datasets,
)
from tests.helpers.catalogs import unregister_datasets

logging.getLogger("detectron2").setLevel(logging.WARNING)


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """Mask stacking in annotations_to_instances crawls with contended intra-op threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------
# Oracle predictions
# ---------------------------------------------------------------------------------------------
def _panoptic_pq(name: str, perturb: bool = False) -> float:
    """PQ of the GT panoptic PNGs fed back; ``perturb`` erases one thing segment."""
    ev = COCOPanopticEvaluator(name)
    ev.reset()
    erased = False
    for d in DatasetCatalog.get(name):
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]), dtype=np.uint32))
        segs = [
            {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
            for s in d["segments_info"]
        ]
        if perturb and not erased:
            victim = next(s for s in d["segments_info"] if s["isthing"] and not s["iscrowd"])
            ids[ids == victim["id"]] = 0
            segs = [s for s in segs if s["id"] != victim["id"]]
            erased = True
        ev.process([d], [{"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), segs)}])
    assert not perturb or erased
    return ev.evaluate()["panoptic_seg"]["PQ"]


def _segm_ap(name: str, drop: bool = False) -> float:
    """segm AP of the GT instance masks fed back (score 1); ``drop`` removes one instance."""
    ev = COCOEvaluator(name, tasks=("segm",), distributed=False)
    ev.reset()
    dropped = False
    for d in DatasetCatalog.get(name):
        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        if drop and not dropped and annos:
            annos, dropped = annos[1:], True
        size = (d["height"], d["width"])
        gt = annotations_to_instances(annos, size, mask_format="bitmask")
        masks = gt.gt_masks.tensor if annos else torch.zeros((0, *size), dtype=torch.bool)
        pred = Instances(size)
        pred.pred_masks = masks
        pred.pred_boxes = BitMasks(masks).get_bounding_boxes()
        pred.pred_classes = gt.gt_classes
        pred.scores = torch.ones(len(gt))
        ev.process([d], [{"instances": pred}])
    assert not drop or dropped
    return ev.evaluate()["segm"]["AP"]


def _miou(name: str, perturb: bool = False) -> float:
    """mIoU of one-hot GT scores fed back; ``perturb`` relabels a block of one image."""
    meta = MetadataCatalog.get(name)
    num_classes = len(meta.stuff_classes)
    ev = SemSegEvaluator(name, distributed=False)
    ev.reset()
    for i, d in enumerate(DatasetCatalog.get(name)):
        gt = np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64)
        label = np.where(gt == meta.ignore_label, 0, gt)
        if perturb and i == 0:
            h, w = label.shape
            block = label[: h // 2, : w // 2]
            label[: h // 2, : w // 2] = (block + 1) % num_classes
        scores = torch.nn.functional.one_hot(torch.from_numpy(label), num_classes)
        ev.process([d], [{"sem_seg": scores.permute(2, 0, 1).float()}])
    return ev.evaluate()["sem_seg"]["mIoU"]


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_names(tmp_path_factory):
    prefix = "knet_test_oracle"
    names = register_synthetic_datasets(
        tmp_path_factory.mktemp("synth_oracle"), {"val": 8}, prefix=prefix
    )
    # COCOEvaluator reads json_file at construction: generate up front.
    assert ensure_synthetic_for_datasets(names) == names
    yield {
        "panoptic": f"{prefix}_panoptic_val",
        "instance": f"{prefix}_instance_val",
        "sem_seg": f"{prefix}_sem_seg_val",
    }
    unregister_datasets(names)


def test_synthetic_panoptic_oracle(synth_names):
    assert _panoptic_pq(synth_names["panoptic"]) == pytest.approx(100.0)
    assert _panoptic_pq(synth_names["panoptic"], perturb=True) < 99.9


def test_synthetic_instance_oracle(synth_names):
    assert _segm_ap(synth_names["instance"]) == pytest.approx(100.0)
    assert _segm_ap(synth_names["instance"], drop=True) < 99.9


def test_synthetic_semantic_oracle(synth_names):
    assert _miou(synth_names["sem_seg"]) == pytest.approx(100.0)
    assert _miou(synth_names["sem_seg"], perturb=True) < 99.9
    # the panoptic names carry sem_seg_file_name too: semantic eval of a panoptic model
    assert _miou(synth_names["panoptic"]) == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------
# Real samples
# ---------------------------------------------------------------------------------------------
def test_coco_tiny_instance_oracle(shared_data):
    name = "knet_test_coco_tiny_val"
    unregister_datasets([name])
    root = shared_data / "coco_tiny"
    meta = register_instance_dataset(
        name, root / "annotations" / "instances_val2017.json", root / "val2017"
    )
    try:
        assert len(meta["thing_classes"]) == 80
        assert meta["thing_dataset_id_to_contiguous_id"][90] == 79  # COCO ids are sparse
        assert _segm_ap(name) == pytest.approx(100.0)
        assert _segm_ap(name, drop=True) < 100.0
    finally:
        unregister_datasets([name])


def test_coco_panoptic_sample_oracle(shared_data, tmp_path):
    name = "knet_test_coco_panoptic_sample"
    unregister_datasets([name])
    root = shared_data / "coco_panoptic_sample"
    sem_root = tmp_path / "panoptic_semseg"
    convert_panoptic_to_semantic(
        root / "panoptic_examples.json", root / "panoptic_examples", sem_root, num_workers=1
    )
    meta = register_panoptic_dataset(
        name,
        root / "input_images",
        root / "panoptic_examples",
        root / "panoptic_examples.json",
        sem_seg_root=sem_root,
    )
    try:
        assert len(meta["thing_classes"]) == 80 and len(meta["stuff_classes"]) == 133
        assert _panoptic_pq(name) == pytest.approx(100.0)
        assert _panoptic_pq(name, perturb=True) < 100.0
        assert _miou(name) == pytest.approx(100.0)
        assert _miou(name, perturb=True) < 100.0
    finally:
        unregister_datasets([name])


def _ade_class_names(csv_file: Path) -> list[str]:
    with open(csv_file) as f:
        rows = list(csv.DictReader(f))
    return [r["Name"].split(";")[0] for r in sorted(rows, key=lambda r: int(r["Idx"]))]


def test_ade20k_sample_semantic_oracle(shared_data, tmp_path):
    name = "knet_test_ade20k_sample"
    unregister_datasets([name])
    root = shared_data / "ade20k_sceneparsing_sample"
    assert convert_ade20k_split(root / "annotations", tmp_path / "annotations_detectron2") == 3
    classes = _ade_class_names(root / "objectInfo150.csv")
    assert len(classes) == 150
    register_sem_seg_dataset(name, root / "images", tmp_path / "annotations_detectron2", classes)
    try:
        assert len(DatasetCatalog.get(name)) == 3
        assert _miou(name) == pytest.approx(100.0)
        assert _miou(name, perturb=True) < 100.0
    finally:
        unregister_datasets([name])
