"""Cityscapes panoptic through D2's own registration, evaluators and the K-Net config.

The real sample ../shared/data/cityscapes_format_panoptic_dummy (one 800x800 photo, a
Cityscapes-format panoptic PNG with 5 cars, a crowd car region and 4 stuff segments; its JSON
uses trainIds) is laid out as D2's ``$DETECTRON2_DATASETS/cityscapes`` (the JSON converted to
the labelIds of ``createPanopticImgs.py``'s default output, plus the gtFine labelIds /
instanceIds / labelTrainIds PNGs derived from the panoptic PNG) and registered with D2's
``register_all_cityscapes_panoptic`` on that test root: the code path of the
``cityscapes_fine_panoptic_*`` names the configs use.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES
from detectron2.data.datasets.cityscapes_panoptic import register_all_cityscapes_panoptic
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
)
from detectron2.structures import Instances
from panopticapi.utils import rgb2id
from PIL import Image

import knet_d2  # noqa: F401  (registers everything)
from knet_d2.data.class_layout import ClassLayout
from knet_d2.data.dataset_mappers import build_knet_test_mapper, build_knet_train_mapper
from knet_d2.engine.trainer import build_knet_evaluator
from tests.helpers.catalogs import unregister_datasets
from tests.helpers.paths import REPO_ROOT, load_config
from tests.helpers.requirements import require_module

logging.getLogger("detectron2").setLevel(logging.WARNING)

DUMMY = "cityscapes_format_panoptic_dummy"
STEM = "dummy_000000_000000"
NAMES = ("cityscapes_fine_panoptic_train", "cityscapes_fine_panoptic_val")
PANOPTIC_CONFIG = REPO_ROOT / "configs/cityscapes/panoptic-segmentation/knet_R50_90k.yaml"
TRAIN_TO_LABEL = {c["trainId"]: c["id"] for c in CITYSCAPES_CATEGORIES}


def _polygons_json(ids: np.ndarray) -> dict:
    """gtFine ``*_polygons.json`` from a panoptic id map: one polygon per segment, the outer
    contour of its largest part (crowd regions as "cargroup", the Cityscapes convention)."""
    names = {c["id"]: c["name"] for c in CITYSCAPES_CATEGORIES}
    objects = []
    for seg_id in np.unique(ids):
        if seg_id == 0:
            continue
        label_id = seg_id // 1000 if seg_id >= 1000 else seg_id
        name = names[label_id] + ("group" if seg_id < 1000 and label_id >= 24 else "")
        contours, _ = cv2.findContours(
            (ids == seg_id).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        # one object per segment, as in Cityscapes: its largest part
        largest = max(contours, key=cv2.contourArea)
        objects.append({"label": name, "polygon": largest[:, 0].tolist()})
    return {"imgHeight": int(ids.shape[0]), "imgWidth": int(ids.shape[1]), "objects": objects}


def build_cityscapes_root(dummy: Path, root: Path) -> Path:
    """Lay the dummy sample out as D2's Cityscapes folders (train and val: the same image)."""
    ann = json.loads((dummy / "gtFine" / "cityscapes_panoptic_dummy_trainId.json").read_text())
    pan_png = dummy / "gtFine" / "cityscapes_panoptic_dummy_trainId" / f"{STEM}_gtFine_panoptic.png"
    ids = rgb2id(np.asarray(Image.open(pan_png), dtype=np.uint32))
    # D2 reads labelId category ids (createPanopticImgs.py without --use-train-id)
    for a in ann["annotations"]:
        for s in a["segments_info"]:
            s["category_id"] = TRAIN_TO_LABEL[s["category_id"]]
    ann["categories"] = [
        {"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": c["color"]}
        for c in CITYSCAPES_CATEGORIES
    ]
    ann["images"] = [{"id": STEM, "file_name": f"{STEM}_leftImg8bit.png", "width": 800,
                      "height": 800}]
    # gtFine PNGs: panoptic ids are Cityscapes instanceIds (labelId or labelId*1000+k)
    label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
    train_ids = np.full(ids.shape, 255, np.uint8)
    for train_id, label_id in TRAIN_TO_LABEL.items():
        train_ids[label_ids == label_id] = train_id
    cs = root / "cityscapes"
    for split in ("train", "val"):
        img_dir = cs / "leftImg8bit" / split / "dummy"
        gt_dir = cs / "gtFine" / split / "dummy"
        pan_dir = cs / "gtFine" / f"cityscapes_panoptic_{split}"
        for d in (img_dir, gt_dir, pan_dir):
            d.mkdir(parents=True)
        shutil.copy(dummy / "leftImg8bit" / f"{STEM}_leftImg8bit.png", img_dir)
        shutil.copy(pan_png, pan_dir)
        (cs / "gtFine" / f"cityscapes_panoptic_{split}.json").write_text(json.dumps(ann))
        Image.fromarray(label_ids).save(gt_dir / f"{STEM}_gtFine_labelIds.png")
        (gt_dir / f"{STEM}_gtFine_polygons.json").write_text(json.dumps(_polygons_json(ids)))
        Image.fromarray(train_ids).save(gt_dir / f"{STEM}_gtFine_labelTrainIds.png")
        Image.fromarray(ids.astype(np.uint16)).save(  # 16-bit, as Cityscapes ships them
            gt_dir / f"{STEM}_gtFine_instanceIds.png"
        )
    return root


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    """D2's cityscapes_fine_panoptic_{train,val} re-registered on a test root built from the
    dummy; D2's own registration is restored afterwards."""
    from tests.helpers.paths import SHARED_DATA, require_shared_data

    dummy = require_shared_data(SHARED_DATA / DUMMY)
    root = build_cityscapes_root(dummy, tmp_path_factory.mktemp("d2_datasets"))
    unregister_datasets(NAMES)
    register_all_cityscapes_panoptic(str(root))
    yield root
    unregister_datasets(NAMES)
    d2_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    register_all_cityscapes_panoptic(d2_root)


def _gt_ids(d: dict) -> np.ndarray:
    return rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]), dtype=np.uint32))


def test_d2_dicts_and_mapper_targets(cityscapes_root):
    (d,) = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    assert d["image_id"] == STEM and Path(d["sem_seg_file_name"]).is_file()
    cats = sorted((s["category_id"], s["iscrowd"]) for s in d["segments_info"])
    # trainIds: road 0, building 2, vegetation 8, sky 10, car 13 (5 instances + 1 crowd)
    assert cats == [(0, 0), (2, 0), (8, 0), (10, 0)] + [(13, 0)] * 5 + [(13, 1)]

    cfg = load_config(PANOPTIC_CONFIG, ["INPUT.MIN_SIZE_TRAIN", "(800,)", "INPUT.MAX_SIZE_TRAIN",
                                        "800", "INPUT.CROP.ENABLED", "False", "INPUT.RANDOM_FLIP",
                                        "none", "INPUT.COLOR_AUG_SSD", "False"])
    out = build_knet_train_mapper(cfg)(d)
    inst = out["instances"]
    # 5 car instances (dataset id 13), then one mask per stuff class; the crowd is no target
    assert inst.gt_classes.tolist() == [13] * 5 + [0, 2, 8, 10]
    ids = _gt_ids(d)
    sem = out["sem_seg"].numpy()
    assert (sem[ids == 26] == 255).all() and (sem[ids == 0] == 255).all()
    assert (sem[ids == 26003] == 13).all() and (sem[ids == 23] == 10).all()
    assert torch.equal(inst.gt_masks.tensor[3], torch.from_numpy(ids == 26003))


def _oracle_outputs(d: dict, layout: ClassLayout, erase_one_car: bool = False) -> dict:
    """Ground truth as K-Net-id model outputs, converted back by the layout like KNet does."""
    ids = _gt_ids(d)
    to_knet = layout.dataset_to_knet
    # semantic scores: every labelled pixel, crowd included (it is "car" in labelIds)
    sem = torch.zeros((layout.num_classes,) + ids.shape)
    for s in d["segments_info"]:
        sem[to_knet[s["category_id"]]][torch.from_numpy(ids == s["id"])] = 1.0
    segs, masks, classes = [], [], []
    for s in d["segments_info"]:
        if s["iscrowd"] or (erase_one_car and s["id"] == 26001):
            ids[ids == s["id"]] = 0
            continue
        isthing = s["category_id"] in layout.thing_dataset_ids
        segs.append({"id": s["id"], "category_id": to_knet[s["category_id"]], "isthing": isthing})
        if isthing:
            masks.append(torch.from_numpy(ids == s["id"]))
            classes.append(to_knet[s["category_id"]])
    inst = Instances(ids.shape)
    inst.pred_masks = torch.stack(masks)
    inst.pred_classes = torch.tensor(classes)
    inst.scores = torch.ones(len(classes))
    out = {"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), segs), "instances": inst,
           "sem_seg": sem}
    return layout.outputs_to_dataset(out)


def test_oracle_pq_through_class_layout(cityscapes_root):
    name = "cityscapes_fine_panoptic_val"
    layout = ClassLayout.from_metadata(MetadataCatalog.get(name))
    assert layout.knet_to_dataset[:8] == tuple(range(11, 19))  # things first inside K-Net
    (d,) = DatasetCatalog.get(name)
    scores = {}
    for erase in (False, True):
        ev = COCOPanopticEvaluator(name)
        ev.reset()
        ev.process([d], [_oracle_outputs(d, layout, erase)])
        scores[erase] = ev.evaluate()["panoptic_seg"]
    assert scores[False]["PQ"] == pytest.approx(100.0)
    assert scores[True]["PQ_th"] < 100.0 and scores[True]["PQ_st"] == pytest.approx(100.0)


def _cityscapesscripts_or_fail(*also: str):
    """Skip when cityscapesscripts (or a module in ``also``) is missing; fail under CI, where
    tools/install_deps.sh must have installed it."""
    for module in ("cityscapesscripts",) + also:
        require_module(module, "tools/install_deps.sh installs it; D2's Cityscapes instance "
                               "loader and evaluators need it")


def test_evaluator_choice_and_missing_cityscapesscripts(cityscapes_root, monkeypatch, tmp_path):
    name = "cityscapes_fine_panoptic_val"
    cfg = load_config(PANOPTIC_CONFIG, ["OUTPUT_DIR", str(tmp_path)])
    cfg.MODEL.KNET.TEST.INSTANCE_ON = cfg.MODEL.KNET.TEST.SEMANTIC_ON = False
    assert isinstance(build_knet_evaluator(cfg, name), COCOPanopticEvaluator)
    cfg.MODEL.KNET.TEST.INSTANCE_ON = True
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda n, *a: None if n == "cityscapesscripts" else real_find_spec(n, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="CityscapesInstanceEvaluator.*cityscapesscripts"):
        build_knet_evaluator(cfg, name)


def test_one_panoptic_model_three_cityscapes_metrics(cityscapes_root, tmp_path, monkeypatch):
    """PQ, AP and mIoU of one set of outputs in one evaluator run (oracle: all 100)."""
    _cityscapesscripts_or_fail()
    monkeypatch.chdir(tmp_path)  # cityscapesscripts writes matches.json into the CWD
    name = "cityscapes_fine_panoptic_val"
    cfg = load_config(PANOPTIC_CONFIG, ["OUTPUT_DIR", str(tmp_path)])
    ev = build_knet_evaluator(cfg, name)
    assert isinstance(ev, DatasetEvaluators)
    kinds = {type(e) for e in ev._evaluators}
    assert kinds == {COCOPanopticEvaluator, CityscapesInstanceEvaluator, CityscapesSemSegEvaluator}
    (d,) = DatasetCatalog.get(name)
    layout = ClassLayout.from_metadata(MetadataCatalog.get(name))
    ev.reset()
    ev.process([d], [_oracle_outputs(d, layout)])
    res = ev.evaluate()
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["sem_seg"]["IoU"] == pytest.approx(100.0)


@pytest.fixture
def one_torch_thread():
    """Small CPU convolutions run several times faster on one thread of a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_cityscapes_panoptic_config_trains_on_cpu(cityscapes_root, one_torch_thread):
    """16 iterations of the Cityscapes panoptic config (narrow R18, 64x96 crops of the
    rescaled real sample, 2 images per batch, its crop-after-resize and colour jitter):
    the loss falls."""
    from detectron2.modeling import build_model

    from knet_d2.solver import build_knet_optimizer

    opts = [
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
        "MODEL.KNET.HIDDEN_DIM", "64", "MODEL.KNET.NUM_HEADS", "4", "MODEL.KNET.FFN_DIM", "128",
        "MODEL.KNET.NECK.CONV_DIM", "64", "MODEL.KNET.NUM_PROPOSALS", "10",
        "MODEL.KNET.NUM_STAGES", "2", "SOLVER.BASE_LR", "0.003", "SOLVER.WARMUP_ITERS", "0",
        "INPUT.MIN_SIZE_TRAIN", "(96, 112)", "INPUT.MAX_SIZE_TRAIN", "256",
        "INPUT.CROP.SIZE", "(64, 96)", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST",
        "256", "DATASETS.TEST", "()",
    ]
    cfg = load_config(PANOPTIC_CONFIG, opts)
    assert cfg.INPUT.CROP.AFTER_RESIZE and cfg.INPUT.COLOR_AUG_SSD
    torch.manual_seed(0)
    np.random.seed(0)
    model = build_model(cfg)
    assert model.class_layout is not None
    optimizer = build_knet_optimizer(cfg, model)
    mapper = build_knet_train_mapper(cfg)
    (d,) = DatasetCatalog.get("cityscapes_fine_panoptic_train")
    losses = []
    model.train()
    for _ in range(16):
        batch = [mapper(d), mapper(d)]
        assert batch[0]["image"].shape[1:] == (64, 96)
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses

    # inference answers in D2's trainIds: things are 11..18, not K-Net's internal 0..7
    model.eval()
    test_input = build_knet_test_mapper(cfg)(d)
    with torch.no_grad():
        (out,) = model([test_input])
    assert set(out["instances"].pred_classes.tolist()) <= set(range(11, 19))
    assert len(out["instances"]) > 0 and out["sem_seg"].shape == (19, 800, 800)
    for seg in out["panoptic_seg"][1]:
        assert seg["isthing"] == (seg["category_id"] >= 11)


@pytest.mark.parametrize(
    "config, dataset, expected",
    [
        ("panoptic-segmentation/knet_R50_90k.yaml", "cityscapes_fine_panoptic_val",
         {COCOPanopticEvaluator, CityscapesInstanceEvaluator, CityscapesSemSegEvaluator}),
        ("panoptic-segmentation/swin/knet_swin_L_90k.yaml", "cityscapes_fine_panoptic_val",
         {COCOPanopticEvaluator, CityscapesInstanceEvaluator, CityscapesSemSegEvaluator}),
        ("instance-segmentation/knet_R50_90k.yaml", "cityscapes_fine_instance_seg_val",
         {CityscapesInstanceEvaluator}),
        ("semantic-segmentation/knet_R50_upernet_512x1024_80k.yaml",
         "cityscapes_fine_sem_seg_val", {CityscapesSemSegEvaluator}),
    ],
)
def test_each_cityscapes_config_gets_d2_evaluators(config, dataset, expected, monkeypatch,
                                                    tmp_path):
    """The evaluators of each config's test set (cityscapesscripts itself is not needed to
    build them: its presence check is bypassed here)."""
    from knet_d2.engine import benchmark_evaluators

    monkeypatch.setattr(benchmark_evaluators, "require_cityscapesscripts", lambda purpose: None)
    cfg = load_config(REPO_ROOT / "configs/cityscapes" / config, ["OUTPUT_DIR", str(tmp_path)])
    assert tuple(cfg.DATASETS.TEST) == (dataset,)
    ev = build_knet_evaluator(cfg, dataset)
    got = {type(e) for e in ev._evaluators} if isinstance(ev, DatasetEvaluators) else {type(ev)}
    assert got == expected


def test_cityscapes_instance_config_trains_on_d2_instance_dicts(cityscapes_root, one_torch_thread):
    """D2's cityscapes_fine_instance_seg_train (gtFine polygons, loaded with cityscapesscripts
    and shapely) on the test root, the knet_instance mapper and a few iterations of the
    instance config: 5 cars (contiguous id 2) and the crowd region, a falling loss."""
    _cityscapesscripts_or_fail("shapely")
    from detectron2.data.datasets.builtin import register_all_cityscapes
    from detectron2.modeling import build_model

    from knet_d2.solver import build_knet_optimizer

    names = [f"cityscapes_fine_{t}_{s}" for t in ("instance_seg", "sem_seg")
             for s in ("train", "val", "test")]
    unregister_datasets(names)
    try:
        register_all_cityscapes(str(cityscapes_root))
        (d,) = DatasetCatalog.get("cityscapes_fine_instance_seg_train")
        cars = [a for a in d["annotations"] if a["category_id"] == 2]
        assert len(cars) == 6 and sum(a["iscrowd"] for a in cars) == 1
        opts = [
            "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
            "MODEL.KNET.HIDDEN_DIM", "64", "MODEL.KNET.NUM_HEADS", "4", "MODEL.KNET.FFN_DIM",
            "128", "MODEL.KNET.NECK.CONV_DIM", "64", "MODEL.KNET.NUM_PROPOSALS", "10",
            "MODEL.KNET.NUM_STAGES", "2", "SOLVER.BASE_LR", "0.003", "SOLVER.WARMUP_ITERS", "0",
            "INPUT.MIN_SIZE_TRAIN", "(96, 112)", "INPUT.MAX_SIZE_TRAIN", "256",
            "INPUT.CROP.ENABLED", "False", "DATASETS.TEST", "()",
        ]
        cfg = load_config(REPO_ROOT / "configs/cityscapes/instance-segmentation/knet_R50_90k.yaml",
                          opts)
        torch.manual_seed(0)
        np.random.seed(0)
        model = build_model(cfg)
        optimizer = build_knet_optimizer(cfg, model)
        mapper = build_knet_train_mapper(cfg)
        first = mapper(d)
        assert first["instances"].gt_classes.tolist() == [2] * 5  # crowd is no target
        losses = []
        model.train()
        for _ in range(16):
            loss = sum(model([mapper(d), mapper(d)]).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    finally:
        unregister_datasets(names)
        register_all_cityscapes(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
