"""ADE20K panoptic: datasets/prepare_ade20k_pan_seg.py, knet_ade20k_panoptic_*, PQ + mIoU.

No real ADE20K instance annotation is at hand, so the test builds the instance release's
format (RGB: R = instance category 1..100, G = instance id) from the real SceneParsing sample
in ../shared/data/ade20k_sceneparsing_sample: every connected region of a thing class is one
instance. The rest is the real pipeline: the prepare script in a D2 folder layout, the
registration used at import time (pointed at the test root), D2's evaluators and the config.
"""
from __future__ import annotations

import json
import logging
import runpy
import shutil

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluators, SemSegEvaluator
from panopticapi.utils import rgb2id
from PIL import Image
from scipy import ndimage

import knet_d2  # noqa: F401  (registers everything)
from knet_d2.data.class_layout import ClassLayout
from knet_d2.data.dataset_mappers import build_knet_train_mapper
from knet_d2.data.datasets.ade20k import convert_ade20k_split
from knet_d2.data.datasets.ade20k_panoptic import (
    ADE20K_THING_IDS,
    convert_ade20k_panoptic_image,
    convert_ade20k_panoptic_split,
)
from knet_d2.data.datasets.register_ade20k_panoptic import register_all_ade20k_panoptic
from knet_d2.engine.trainer import build_knet_evaluator
from tests.helpers.catalogs import unregister_datasets
from tests.helpers.paths import REPO_ROOT, SHARED_DATA, load_config, require_shared_data

logging.getLogger("detectron2").setLevel(logging.WARNING)

NAMES = ("knet_ade20k_panoptic_train", "knet_ade20k_panoptic_val")
CONFIG = REPO_ROOT / "configs/ade20k/panoptic-segmentation/knet_R50_160k.yaml"
SAMPLE = SHARED_DATA / "ade20k_sceneparsing_sample"


def instance_png_from_semantic(sem: np.ndarray) -> np.ndarray:
    """(H, W) SceneParsing labels -> instance-release RGB (R category 1..100, G instance id)."""
    out = np.zeros(sem.shape + (3,), np.uint8)
    next_id = 1
    for k, label in enumerate(ADE20K_THING_IDS, start=1):
        regions, n = ndimage.label(sem == label)
        for r in range(1, n + 1):
            out[regions == r] = (k, next_id, 0)
            next_id += 1
    return out


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory):
    """A D2 datasets root with ADEChallengeData2016 made from the 3-image sample (same images
    for training and validation), converted by the prepare scripts' functions, and the
    knet_ade20k_panoptic_* names registered on it (restored afterwards)."""
    require_shared_data(SAMPLE)
    root = tmp_path_factory.mktemp("d2_datasets")
    ade = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        for sub in ("images", "annotations", "annotations_instance"):
            (ade / sub / split).mkdir(parents=True)
        for img in sorted((SAMPLE / "images").glob("*.jpg")):
            shutil.copy(img, ade / "images" / split)
            label = SAMPLE / "annotations" / f"{img.stem}.png"
            shutil.copy(label, ade / "annotations" / split)
            ins = instance_png_from_semantic(np.asarray(Image.open(label)))
            Image.fromarray(ins).save(ade / "annotations_instance" / split / f"{img.stem}.png")
        convert_ade20k_split(ade / "annotations" / split, ade / "annotations_detectron2" / split)
    unregister_datasets(NAMES)
    yield root
    unregister_datasets(NAMES)
    import os

    register_all_ade20k_panoptic(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))


@pytest.fixture(scope="module")
def ade_registered(ade_root):
    """The prepare script run once on the root, then the names registered on it."""
    import os

    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(ade_root)
    try:
        runpy.run_path(str(REPO_ROOT / "datasets" / "prepare_ade20k_pan_seg.py"),
                       run_name="__main__")
    finally:
        if old is None:
            del os.environ["DETECTRON2_DATASETS"]
        else:
            os.environ["DETECTRON2_DATASETS"] = old
    assert register_all_ade20k_panoptic(ade_root) == list(NAMES)
    return ade_root


def test_prepared_panoptic_matches_the_semantic_labels(ade_registered):
    ade = ade_registered / "ADEChallengeData2016"
    data = json.loads((ade / "ade20k_panoptic_val.json").read_text())
    assert len(data["images"]) == 3 and len(data["categories"]) == 150
    assert sum(c["isthing"] for c in data["categories"]) == 100
    things_seen = set()
    for ann in data["annotations"]:
        ids = rgb2id(np.asarray(Image.open(ade / "ade20k_panoptic_val" / ann["file_name"])))
        sem = np.asarray(Image.open(ade / "annotations" / "validation" / ann["file_name"]))
        for s in ann["segments_info"]:
            mask = ids == s["id"]
            assert mask.sum() == s["area"] > 0
            # every segment pixel carries its class in the SceneParsing label (1-based)
            assert (sem[mask] == s["category_id"] + 1).all()
            if s["category_id"] + 1 in ADE20K_THING_IDS:
                things_seen.add(s["category_id"] + 1)
        # everything labelled is in a segment (each thing region is an instance here)
        assert ((ids != 0) == (sem != 0)).all()
    assert things_seen == {21, 44, 81, 88, 103}  # car, signboard, bus, street lamp, van


def test_conversion_errors_name_the_file(ade_registered, tmp_path):
    ade = ade_registered / "ADEChallengeData2016"
    with pytest.raises(FileExistsError, match="ade20k_panoptic_val.json exists"):
        convert_ade20k_panoptic_split(ade, "validation")
    sem = tmp_path / "a.png"
    Image.fromarray(np.full((4, 4), 21, np.uint8)).save(sem)
    two = np.zeros((4, 4, 3), np.uint8)
    two[:2] = (9, 1, 0)
    two[2:] = (10, 1, 0)  # one instance id with two categories
    ins = tmp_path / "b.png"
    Image.fromarray(two).save(ins)
    with pytest.raises(ValueError, match=r"b\.png: instance 1 has instance categories \[9, 10\]"):
        convert_ade20k_panoptic_image(sem, ins, tmp_path / "out.png")
    Image.fromarray(two[..., 0]).save(ins)
    with pytest.raises(ValueError, match=r"b\.png: instance PNG must have mode RGB, got L"):
        convert_ade20k_panoptic_image(sem, ins, tmp_path / "out.png")


def test_oracle_pq_and_miou_of_one_output_set(ade_registered, tmp_path):
    name = "knet_ade20k_panoptic_val"
    cfg = load_config(CONFIG, ["OUTPUT_DIR", str(tmp_path)])
    ev = build_knet_evaluator(cfg, name)
    assert isinstance(ev, DatasetEvaluators)
    assert {type(e) for e in ev._evaluators} == {COCOPanopticEvaluator, SemSegEvaluator}
    layout = ClassLayout.from_metadata(MetadataCatalog.get(name))
    to_knet = layout.dataset_to_knet
    ev.reset()
    for d in DatasetCatalog.get(name):
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"])))
        segs = [{"id": s["id"], "category_id": to_knet[s["category_id"]], "isthing": s["isthing"]}
                for s in d["segments_info"]]
        sem = torch.zeros((150,) + ids.shape)
        for s in segs:
            sem[s["category_id"]][torch.from_numpy(ids == s["id"])] = 1.0
        out = {"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), segs), "sem_seg": sem}
        ev.process([d], [layout.outputs_to_dataset(out)])
    res = ev.evaluate()
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    # mIoU over the classes present (D2's SemSegEvaluator skips classes absent from both)
    assert res["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_ade20k_panoptic_config_trains_on_cpu(ade_registered):
    """16 iterations of the ADE20K panoptic config (narrow R18, 64x64 crops): the loss falls."""
    from detectron2.modeling import build_model

    from knet_d2.solver import build_knet_optimizer

    opts = [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
        "MODEL.KNET.HIDDEN_DIM", "64", "MODEL.KNET.NUM_HEADS", "4", "MODEL.KNET.FFN_DIM", "128",
        "MODEL.KNET.NECK.CONV_DIM", "64", "MODEL.KNET.NUM_PROPOSALS", "10",
        "MODEL.KNET.NUM_STAGES", "2", "SOLVER.BASE_LR", "0.003", "SOLVER.WARMUP_ITERS", "0",
        "INPUT.MIN_SIZE_TRAIN", "(80, 96)", "INPUT.MAX_SIZE_TRAIN", "256",
        "INPUT.CROP.SIZE", "(64, 64)", "DATASETS.TEST", "()",
    ]
    cfg = load_config(CONFIG, opts)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        np.random.seed(0)
        model = build_model(cfg)
        assert model.class_layout is not None
        optimizer = build_knet_optimizer(cfg, model)
        mapper = build_knet_train_mapper(cfg)
        dicts = DatasetCatalog.get("knet_ade20k_panoptic_train")
        losses = []
        model.train()
        for i in range(16):
            batch = [mapper(dicts[i % 3]), mapper(dicts[(i + 1) % 3])]
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    finally:
        torch.set_num_threads(old_threads)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
