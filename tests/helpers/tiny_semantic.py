"""Semantic K-Net on a CPU: a tiny ResNetV1c-18 + KNetSemSegHead config, its backbone features,
and the ADE20K sample of ../shared/data registered as a dataset (labels converted)."""
from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.modeling import build_backbone
from detectron2.projects.deeplab import add_deeplab_config

from knet_d2 import add_knet_config
from knet_d2.data.datasets.ade20k import convert_ade20k_label
from knet_d2.modeling.semantic import ASPPHead, FCNHead, PSPHead, UPerHead

NUM_CLASSES = 5
HEADS = {"FCN": FCNHead, "PSP": PSPHead, "ASPP": ASPPHead, "UPerNet": UPerHead}


def base_cfg():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_knet_config(cfg)
    return cfg


def tiny_cfg(head: str = "UPerNet", num_classes: int = NUM_CLASSES, channels: int = 32):
    """Tiny ResNetV1c-18 (16..128 ch) + semantic K-Net, D8 unless UPerNet."""
    cfg = base_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_v1c_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.STEM_TYPE, r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS = 18, "deeplab", 16, 16
    r.NORM, r.STRIDE_IN_1X1 = "BN", False
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    dilated = head != "UPerNet"
    r.RES4_DILATION, r.RES5_DILATION = (2, 4) if dilated else (1, 1)
    h = cfg.MODEL.SEM_SEG_HEAD
    h.NAME, h.NUM_CLASSES, h.NORM, h.IGNORE_VALUE = "KNetSemSegHead", num_classes, "BN", 255
    k = cfg.MODEL.KNET
    k.NUM_HEADS, k.FFN_DIM = 4, 64
    s = k.SEM
    s.GENERATE_HEAD = head
    s.IN_FEATURES = ["res2", "res3", "res4", "res5"] if head == "UPerNet" else ["res5"]
    s.CHANNELS, s.UPDATOR_CHANNELS, s.AUX_CHANNELS = channels, channels // 2, 16
    return cfg


def features_for(cfg, batch: int, h: int = 97, w: int = 131):
    backbone = build_backbone(cfg).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(batch, 3, h, w))
    return backbone, feats


def register_ade_sample(shared_data: Path, tmp_path: Path, name: str) -> str:
    root = shared_data / "ade20k_sceneparsing_sample"
    gt_dir = tmp_path / "annotations_detectron2"
    for png in sorted((root / "annotations").glob("*.png")):
        convert_ade20k_label(png, gt_dir / png.name)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    img_dir = str(root / "images")
    DatasetCatalog.register(name, lambda: load_sem_seg(str(gt_dir), img_dir, "png", "jpg"))
    MetadataCatalog.get(name).set(
        stuff_classes=MetadataCatalog.get("ade20k_sem_seg_val").stuff_classes,
        ignore_label=255, evaluator_type="sem_seg")
    return name
