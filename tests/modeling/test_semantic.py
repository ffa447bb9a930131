"""Semantic K-Net: decode heads, ResNetV1c, KNetSemSegHead, mapper, TTA, configs, evaluation."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets import load_sem_seg
from detectron2.evaluation import SemSegEvaluator, inference_on_dataset
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_backbone, build_model
from detectron2.projects.deeplab import add_deeplab_config
from PIL import Image
from torch import nn

from knet_d2 import add_knet_config
from knet_d2.checkpoint import convert_mmcv_resnet_v1c_state_dict
from knet_d2.data.dataset_mappers import MAPPER_REGISTRY, build_knet_train_mapper
from knet_d2.data.dataset_mappers.semantic_mapper import (
    KNetSemanticDatasetMapper,
    RandomRatioResize,
)
from knet_d2.data.datasets.ade20k import convert_ade20k_label
from knet_d2.modeling.kernel_update_head import KernelUpdateHead
from knet_d2.modeling.semantic import (
    ASPPHead,
    FCNHead,
    KNetSemSegHead,
    PSPHead,
    UPerHead,
    mmseg_cross_entropy,
)
from knet_d2.modeling.semantic.resnet_v1c import stage_dilations
from knet_d2.test_time_augmentation import SemanticSegmentorWithTTA, SemSegDatasetMapperTTA
from tests.helpers.paths import REPO_ROOT as REPO

ADE_CONFIGS = sorted((REPO / "configs/ade20k/semantic-segmentation").glob("knet_*.yaml"))
NUM_CLASSES = 5
HEADS = {"FCN": FCNHead, "PSP": PSPHead, "ASPP": ASPPHead, "UPerNet": UPerHead}


# ----------------------------------------------------------------------------- helpers
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


# ----------------------------------------------------------------------------- backbone
def test_stage_dilations_contract():
    assert stage_dilations(2, 6) == [1, 2, 2, 2, 2, 2]
    assert stage_dilations(4, 3) == [2, 4, 4]
    assert stage_dilations(1, 2) == [1, 1]


def test_resnet_v1c_50_d8_structure():
    cfg = base_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_v1c_backbone"
    cfg.merge_from_file(str(REPO / "configs/ade20k/semantic-segmentation/"
                            "knet_fcn_R50_512x512_80k.yaml"))
    cfg.MODEL.RESNETS.NORM = "BN"
    bb = build_backbone(cfg)
    # deep stem 3 -> 32 -> 32 -> 64
    assert [bb.stem.conv1.weight.shape[:2], bb.stem.conv3.weight.shape[:2]] == [
        (32, 3), (64, 32)]
    assert tuple(bb.stem.conv1.stride) == (2, 2) and bb.stem.conv1.kernel_size == (3, 3)
    shapes = bb.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"res2": 4, "res3": 8, "res4": 8, "res5": 8}
    assert [shapes[k].channels for k in ("res2", "res3", "res4", "res5")] == [256, 512, 1024, 2048]
    # contract_dilation: res4 (1, 2, 2, 2, 2, 2), res5 (2, 4, 4), all stride 1; 3x3 carries it
    assert [b.conv2.dilation[0] for b in bb.res4] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2.dilation[0] for b in bb.res5] == [2, 4, 4]
    assert [b.conv2.padding[0] for b in bb.res5] == [2, 4, 4]
    assert bb.res3[0].conv2.stride == (2, 2) and bb.res3[0].conv1.stride == (1, 1)  # pytorch style
    assert bb.res4[0].shortcut.stride == (1, 1) and bb.res5[0].conv2.stride == (1, 1)
    # parameter count = torchvision ResNet-50 without fc, 7x7 stem replaced by the deep stem
    tv = torchvision.models.resnet50()
    n_tv = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    deep_minus_7x7 = (3 * 32 + 32 * 32 + 32 * 64) * 9 + 2 * (32 + 32 + 64) - (3 * 64 * 49 + 2 * 64)
    assert sum(p.numel() for p in bb.parameters()) == n_tv + deep_minus_7x7


@pytest.mark.parametrize("dilated", [True, False])
def test_resnet_v1c_tiny_output_sizes(dilated):
    cfg = tiny_cfg("FCN" if dilated else "UPerNet")
    _, feats = features_for(cfg, 1)
    sizes = {k: tuple(v.shape[-2:]) for k, v in feats.items()}
    s4, s8 = (25, 33), (13, 17)  # ceil-halving of 97x131 through stem (2), pool (2), res3 (2)
    assert sizes["res2"] == s4 and sizes["res3"] == s8
    if dilated:
        assert sizes["res4"] == s8 and sizes["res5"] == s8
    else:
        assert sizes["res4"] == (7, 9) and sizes["res5"] == (4, 5)


def test_convert_mmcv_resnet_v1c_keys():
    """Every mmcv ResNetV1c-50 key maps onto exactly the D2 backbone's keys."""
    cfg = base_cfg()
    cfg.merge_from_file(str(REPO / "configs/ade20k/semantic-segmentation/"
                            "knet_upernet_R50_512x512_80k.yaml"))
    cfg.MODEL.RESNETS.NORM = "BN"
    bb = build_backbone(cfg)
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    mm = [f"stem.{i}.weight" for i in (0, 3, 6)]
    mm += [f"stem.{i}.{p}" for i in (1, 4, 7) for p in bn]
    for layer, n in zip(range(1, 5), (3, 4, 6, 3)):
        for j in range(n):
            pre = f"backbone.layer{layer}.{j}."
            mm += [f"{pre}conv{c}.weight" for c in (1, 2, 3)]
            mm += [f"{pre}bn{c}.{p}" for c in (1, 2, 3) for p in bn]
            if j == 0:
                mm += [f"{pre}downsample.0.weight"] + [f"{pre}downsample.1.{p}" for p in bn]
    mm += ["fc.weight", "fc.bias"]
    out = convert_mmcv_resnet_v1c_state_dict({"state_dict": {k: torch.zeros(1) for k in mm}})
    assert set(out) == set(bb.state_dict())
    assert len(out) == len(mm) - 2


# ----------------------------------------------------------------------------- decode heads
@pytest.mark.parametrize("head,batch", list(itertools.product(HEADS, [1, 2])))
def test_generation_head_shapes(head, batch):
    cfg = tiny_cfg(head)
    _, feats = features_for(cfg, batch)
    bb_shapes = build_backbone(cfg).output_shape()
    m = SEM_SEG_HEADS_REGISTRY.get(HEADS[head].__name__)(cfg, bb_shapes)
    assert isinstance(m, HEADS[head])
    m.eval()
    stride = 4 if head == "UPerNet" else 8
    assert m.common_stride == stride
    h, w = (25, 33) if head == "UPerNet" else (13, 17)
    with torch.no_grad():
        f = m.forward_features(feats)
        logits, losses = m(feats)
    assert f.shape == (batch, 32, h, w)
    assert m.conv_seg.weight.shape == (NUM_CLASSES, 32, 1, 1)
    assert logits.shape == (batch, NUM_CLASSES, h * stride, w * stride) and losses == {}
    assert h * stride >= 97 and w * stride >= 131


def test_generation_head_structure():
    cfg = tiny_cfg("ASPP")
    shapes = build_backbone(cfg).output_shape()
    aspp = ASPPHead(cfg, shapes)
    assert [(m.kernel_size[0], m.dilation[0], m.padding[0]) for m in aspp.aspp_modules] == [
        (1, 1, 0), (3, 12, 12), (3, 24, 24), (3, 36, 36)]
    assert aspp.bottleneck.weight.shape == (32, 5 * 32, 3, 3)
    assert aspp.image_pool[1].bias is None and aspp.image_pool[1].norm is not None
    psp = PSPHead(cfg, shapes)
    assert [m[0].output_size for m in psp.psp_modules] == [1, 2, 3, 6]
    assert psp.bottleneck.weight.shape == (32, 128 + 4 * 32, 3, 3)
    fcn = FCNHead(cfg, shapes)
    assert len(fcn.convs) == 2 and fcn.conv_cat.weight.shape == (32, 128 + 32, 3, 3)
    assert isinstance(fcn.dropout, nn.Dropout2d) and fcn.dropout.p == 0.1
    cfg = tiny_cfg("UPerNet")
    uper = UPerHead(cfg, build_backbone(cfg).output_shape())
    assert uper.in_features == ["res2", "res3", "res4", "res5"]
    assert len(uper.lateral_convs) == 3 and len(uper.fpn_convs) == 3
    assert uper.fpn_bottleneck.weight.shape == (32, 4 * 32, 3, 3)
    assert uper.bottleneck.weight.shape == (32, 128 + 4 * 32, 3, 3)


def test_fcn_head_forward_is_concat_of_input_and_convs():
    cfg = tiny_cfg("FCN")
    _, feats = features_for(cfg, 2)
    m = FCNHead(cfg, build_backbone(cfg).output_shape()).eval()
    x = feats["res5"]
    with torch.no_grad():
        expect = m.conv_cat(torch.cat([x, m.convs[1](m.convs[0](x))], 1))
        assert torch.allclose(m.forward_features(feats), expect)


def test_standalone_head_with_semantic_segmentor_trains():
    cfg = tiny_cfg("PSP")
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PSPHead"
    model = build_model(cfg)
    model.train()
    batch = [{"image": torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8),
              "sem_seg": torch.randint(0, NUM_CLASSES, (64, 80))} for _ in range(2)]
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    assert model.sem_seg_head.conv_seg.weight.grad.abs().sum() > 0


def test_mmseg_cross_entropy_averages_over_all_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    targets = torch.randint(0, 4, (2, 10, 12))
    targets[0, :3] = 255
    up = F.interpolate(logits, size=(10, 12), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, targets, ignore_index=255, reduction="none")
    loss = mmseg_cross_entropy(logits, targets, 255)
    assert torch.allclose(loss, per_pixel.sum() / targets.numel())
    assert not torch.allclose(loss, F.cross_entropy(up, targets, ignore_index=255))
    assert mmseg_cross_entropy(logits, torch.full_like(targets, 255), 255) == 0


# ----------------------------------------------------------------------------- K-Net head
def build_knet_head(head: str = "UPerNet", channels: int = 32):
    cfg = tiny_cfg(head, channels=channels)
    shapes = build_backbone(cfg).output_shape()
    return cfg, KNetSemSegHead(cfg, shapes)


@pytest.mark.parametrize("head", list(HEADS))
def test_knet_sem_seg_head_train_and_inference(head):
    cfg, m = build_knet_head(head)
    _, feats = features_for(cfg, 2)
    targets = torch.randint(0, NUM_CLASSES, (2, 97, 131))
    targets[:, :10] = 255
    m.train()
    none, losses = m(feats, targets)
    assert none is None
    assert set(losses) == {"loss_ce_s0", "loss_ce_s1", "loss_ce_s2", "loss_ce_s3", "loss_aux_ce"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert m.kernel_generate_head.conv_seg.weight.grad.abs().sum() > 0
    assert m.kernel_update_head[2].fc_mask.weight.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        out, empty = m(feats)
    stride = 4 if head == "UPerNet" else 8
    h, w = (25, 33) if head == "UPerNet" else (13, 17)
    assert out.shape == (2, NUM_CLASSES, h * stride, w * stride) and empty == {}


def test_knet_head_losses_match_manual_computation():
    cfg, m = build_knet_head("FCN")
    _, feats = features_for(cfg, 2)
    targets = torch.randint(0, NUM_CLASSES, (2, 97, 131))
    targets[1, 50:] = 255
    m.train()
    torch.manual_seed(3)
    segs = m.layers(feats)
    aux = m.auxiliary_head.layers(feats)
    torch.manual_seed(3)
    _, losses = m(feats, targets)
    assert len(segs) == 4 and all(s.shape == (2, NUM_CLASSES, 13, 17) for s in segs)
    for i, s in enumerate(segs):
        up = F.interpolate(s, size=(97, 131), mode="bilinear", align_corners=False)
        ce = F.cross_entropy(up, targets, ignore_index=255, reduction="none").mean()
        assert torch.allclose(losses[f"loss_ce_s{i}"], ce, atol=1e-6)
    up = F.interpolate(aux, size=(97, 131), mode="bilinear", align_corners=False)
    ce = F.cross_entropy(up, targets, ignore_index=255, reduction="none").mean()
    assert torch.allclose(losses["loss_aux_ce"], 0.4 * ce, atol=1e-6)


def test_knet_head_initial_kernels_and_soft_grouping():
    """Stage 1 gets conv_seg.weight as kernels and seg_0 as masks; grouping = softmax over K."""
    cfg, m = build_knet_head("PSP")
    _, feats = features_for(cfg, 2)
    m.eval()
    seen = {}

    def hook(mod, args):
        seen["feats"], seen["kernels"], seen["masks"] = args

    handle = m.kernel_update_head[0].register_forward_pre_hook(hook)
    with torch.no_grad():
        m.layers(feats)
        gen = m.kernel_generate_head
        f = gen.forward_features(feats)
    handle.remove()
    w = gen.conv_seg.weight[:, :, 0, 0]
    assert seen["kernels"].shape == (2, NUM_CLASSES, 32)
    assert torch.equal(seen["kernels"][0], w) and torch.equal(seen["kernels"][1], w)
    assert torch.allclose(seen["feats"], f)
    assert torch.allclose(seen["masks"], gen.conv_seg(f))  # eval: no dropout, bias included
    stage = m.kernel_update_head[0]
    assert stage.mask_act == "softmax" and stage.fc_cls is None
    g = stage.group_masks(seen["masks"], tuple(f.shape[-2:]))
    assert torch.allclose(g.sum(1), torch.ones(2, 13, 17))
    assert torch.allclose(g, seen["masks"].softmax(1))
    # group features are soft-mask-weighted sums of the transformed features
    ft = stage.feat_transform(f)
    expect = (g.unsqueeze(2) * ft.unsqueeze(1)).sum((-1, -2))
    assert torch.allclose(stage.assemble(ft, seen["masks"]), expect, atol=1e-4)


def test_split_halves_quirk_of_updator():
    """512-d kernels with a 256-d KernelUpdator = the updator on each 256-ch half separately."""
    cfg, m = build_knet_head("FCN", channels=512)
    stage = m.kernel_update_head[0]
    assert stage.in_channels == 512 and stage.kernel_update_conv.in_channels == 256
    assert stage.attention.embed_dim == 512 and stage.ffn.layers[0][0].weight.shape == (64, 512)
    assert stage.kernel_update_conv.dynamic_layer.weight.shape == (512, 256)
    torch.manual_seed(0)
    fk, k = torch.randn(2, NUM_CLASSES, 512), torch.randn(2, NUM_CLASSES, 512)
    upd = stage.kernel_update_conv
    with torch.no_grad():
        out = upd(fk, k)
        halves = [upd(fk[..., i * 256:(i + 1) * 256].contiguous(),
                      k[..., i * 256:(i + 1) * 256].contiguous()) for i in range(2)]
        per_item = torch.stack([
            torch.cat([upd(fk[b:b + 1, n:n + 1, i * 256:(i + 1) * 256],
                           k[b:b + 1, n:n + 1, i * 256:(i + 1) * 256])[0, 0] for i in range(2)])
            for b in range(2) for n in range(NUM_CLASSES)]).view(2, NUM_CLASSES, 512)
    assert out.shape == (2, NUM_CLASSES, 512)
    assert torch.allclose(out, torch.cat(halves, -1), atol=1e-6)
    assert torch.allclose(out, per_item, atol=1e-6)
    # and it is not the same as mixing the halves (the quirk matters)
    assert not torch.allclose(out[..., :256], upd(fk[..., 256:], k[..., :256]), atol=1e-3)


def test_knet_head_works_with_semantic_segmentor_and_odd_sizes():
    cfg = tiny_cfg("UPerNet", num_classes=3)
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 7
    model = build_model(cfg)
    assert isinstance(model.sem_seg_head, KNetSemSegHead)
    assert model.sem_seg_head.ignore_value == 7
    imgs = [torch.randint(0, 256, (3, 97, 131), dtype=torch.uint8),
            torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)]
    segs = [torch.randint(0, 3, (97, 131)), torch.full((90, 120), 7)]
    model.train()
    losses = model([{"image": i, "sem_seg": s} for i, s in zip(imgs, segs)])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": imgs[0], "height": 50, "width": 70}, {"image": imgs[1]}])
    assert out[0]["sem_seg"].shape == (3, 50, 70) and out[1]["sem_seg"].shape == (3, 90, 120)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", ADE_CONFIGS, ids=lambda p: p.name)
def test_ade_configs_build(path):
    cfg = base_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.INPUT.DATASET_MAPPER_NAME == "knet_semantic"
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150
    crop = 640 if "640x640" in path.name else 512
    assert tuple(cfg.INPUT.CROP.SIZE) == (crop, crop) and cfg.INPUT.MIN_SIZE_TEST == crop
    if "fcn" not in path.name or "640" in path.name:
        return  # building R50 once is enough for CPU time
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    model = build_model(cfg)
    head = model.sem_seg_head
    assert isinstance(head.kernel_generate_head, FCNHead) and len(head.kernel_update_head) == 3
    assert head.kernel_generate_head.conv_seg.weight.shape == (150, 512, 1, 1)
    assert head.auxiliary_head.conv_seg.weight.shape == (150, 256, 1, 1)
    assert head.auxiliary_head.in_channels == [1024]
    for stage in head.kernel_update_head:
        assert isinstance(stage, KernelUpdateHead) and stage.kernel_update_conv.in_channels == 256


def test_synthetic_semantic_configs_load():
    for path in sorted((REPO / "configs/synthetic/semantic").glob("knet_*.yaml")):
        cfg = base_cfg()
        cfg.merge_from_file(str(path))
        assert cfg.DATASETS.TRAIN == ("knet_synth_sem_seg_train",)
        model = build_model(cfg)
        assert isinstance(model.sem_seg_head, KNetSemSegHead)


# ----------------------------------------------------------------------------- mapper
def test_random_ratio_resize_matches_mmseg_rule():
    aug = RandomRatioResize(512, 2048, (1.0, 1.0))
    t = aug.get_transform(np.zeros((300, 1000, 3), np.uint8))
    assert (t.new_h, t.new_w) == (512, 1707)  # short side limited
    t = aug.get_transform(np.zeros((100, 1000, 3), np.uint8))
    assert (t.new_h, t.new_w) == (205, 2048)  # long side limited (panorama)
    aug = RandomRatioResize(512, 2048, (0.5, 2.0))
    np.random.seed(0)
    shorts = [min(aug.get_transform(np.zeros((400, 600, 3), np.uint8)).new_h, 10**9)
              for _ in range(200)]
    assert 256 <= min(shorts) < 320 and 960 < max(shorts) <= 1024


def _write_sem_sample(tmp_path: Path, h: int = 60, w: int = 90) -> dict:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lab = np.zeros((h, w), np.uint8)
    lab[:, w // 3:] = 1
    lab[h // 2:, :] = 2
    lab[:5] = 255
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(lab).save(tmp_path / "a_gt.png")
    return {"file_name": str(tmp_path / "a.png"), "sem_seg_file_name": str(tmp_path / "a_gt.png"),
            "height": h, "width": w}


def test_semantic_mapper_registered_and_pads(tmp_path):
    assert MAPPER_REGISTRY["knet_semantic"] is KNetSemanticDatasetMapper
    cfg = tiny_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "knet_semantic"
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (64,), 256
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = True, "absolute", (96, 96)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.75
    cfg.INPUT.COLOR_AUG_SSD = True
    mapper = build_knet_train_mapper(cfg)
    assert isinstance(mapper, KNetSemanticDatasetMapper)
    names = [type(a).__name__ for a in mapper.augmentations.augs]
    assert names[:3] == ["RandomRatioResize", "RandomCrop_CategoryAreaConstraint", "RandomFlip"]
    d = _write_sem_sample(tmp_path)
    np.random.seed(1)
    seen_pad = False
    for _ in range(10):
        out = mapper(d)
        img, seg = out["image"], out["sem_seg"]
        assert img.dtype == torch.uint8 and img.shape == (3, 96, 96)
        assert seg.dtype == torch.int64 and seg.shape == (96, 96)
        assert set(seg.unique().tolist()) <= {0, 1, 2, 255}
        pad_rows = (seg == 255).all(1)
        if pad_rows[-1]:  # the bottom rows are padding: image = rounded pixel mean there
            seen_pad = True
            assert (img[:, -1, 0] == torch.tensor([124, 116, 104], dtype=torch.uint8)).all()
    assert seen_pad  # resized heights 32..128 < 96 happen with seed 1


def test_semantic_mapper_eval_mode(tmp_path):
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 120, 400
    mapper = KNetSemanticDatasetMapper(cfg, is_train=False)
    out = mapper(_write_sem_sample(tmp_path))
    assert out["image"].shape == (3, 120, 180) and "sem_seg" not in out
    assert "sem_seg_file_name" not in out


# ----------------------------------------------------------------------------- TTA
class _ConvModel(nn.Module):
    """Fake SemanticSegmentor: logits = 3x3 conv of the image, resized to (height, width)."""

    def __init__(self, symmetric: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        if symmetric:  # horizontally mirror-symmetric kernels -> flip-equivariant model
            with torch.no_grad():
                self.conv.weight.copy_((self.conv.weight + self.conv.weight.flip(-1)) / 2)
        self.calls = []

    def forward(self, batched):
        outs = []
        for x in batched:
            self.calls.append(tuple(x["image"].shape[-2:]))
            y = self.conv(x["image"].float()[None] / 255.0)
            y = F.interpolate(y, size=(x["height"], x["width"]), mode="bilinear",
                              align_corners=False)
            outs.append({"sem_seg": y[0]})
        return outs


def _tta_cfg(min_sizes, flip):
    cfg = base_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 40, 160
    cfg.TEST.AUG.MIN_SIZES, cfg.TEST.AUG.MAX_SIZE, cfg.TEST.AUG.FLIP = min_sizes, 1000, flip
    return cfg


def _tta_input():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 30, 50), dtype=np.uint8)
    return {"image": torch.as_tensor(img), "height": 30, "width": 50}


def test_tta_mapper_scales_and_flips():
    mapper = SemSegDatasetMapperTTA(_tta_cfg((20, 40, 60), True))
    outs = mapper(_tta_input())
    assert len(outs) == 6
    assert [tuple(o["image"].shape[-2:]) for o in outs[::2]] == [(20, 33), (40, 67), (60, 100)]
    assert all(o["height"] == 30 and o["width"] == 50 for o in outs)
    assert torch.equal(outs[1]["image"], outs[0]["image"].flip(-1))
    # the long-side target scales with the ratio (mmseg (2048, 512) x r), capped by MAX_SIZE
    m = SemSegDatasetMapperTTA(_tta_cfg((20, 80), False))
    assert m.scaled_size(10, 200, 20) == (4, 80) and m.scaled_size(10, 200, 80) == (16, 320)
    m.max_size = 100
    assert m.scaled_size(10, 200, 80) == (5, 100)


def test_tta_flip_equivariant_model_and_scale_average():
    inp = _tta_input()
    sym = _ConvModel(symmetric=True)
    flip = SemanticSegmentorWithTTA(_tta_cfg((20, 40, 60), True), sym, batch_size=4)(
        [inp])[0]["sem_seg"]
    noflip = SemanticSegmentorWithTTA(_tta_cfg((20, 40, 60), False), sym)([inp])[0]["sem_seg"]
    assert flip.shape == (4, 30, 50)
    assert torch.allclose(flip, noflip, atol=1e-5)
    assert torch.allclose(flip.sum(0), torch.ones(30, 50), atol=1e-5)  # probabilities
    # manual average of per-scale softmax
    manual = []
    mapper = SemSegDatasetMapperTTA(_tta_cfg((20, 40, 60), False))
    for aug in mapper(inp):
        with torch.no_grad():
            manual.append(sym([aug])[0]["sem_seg"].softmax(0))
    assert torch.allclose(noflip, torch.stack(manual).mean(0), atol=1e-6)
    # a non-symmetric model: flipped copies are un-flipped before averaging
    asym = _ConvModel(symmetric=False)
    res = SemanticSegmentorWithTTA(_tta_cfg((40,), True), asym)([inp])[0]["sem_seg"]
    a0 = asym([mapper(inp)[1]])[0]["sem_seg"].softmax(0)
    fl = dict(inp, image=inp["image"].flip(-1))
    a1 = asym([SemSegDatasetMapperTTA(_tta_cfg((40,), False))(fl)[0]])[0]["sem_seg"].softmax(0)
    assert torch.allclose(res, (a0 + a1.flip(-1)) / 2, atol=1e-5)


# ----------------------------------------------------------------------------- evaluation
def _register_ade_sample(shared_data: Path, tmp_path: Path, name: str) -> str:
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


def test_sem_seg_evaluator_on_ade_sample(shared_data, tmp_path):
    name = _register_ade_sample(shared_data, tmp_path, "_test_knet_ade_sample")
    cfg = tiny_cfg("UPerNet", num_classes=150)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 256
    cfg.DATASETS.TEST = (name,)
    cfg.DATALOADER.NUM_WORKERS = 0
    model = build_model(cfg).eval()
    loader = build_detection_test_loader(cfg, name)
    evaluator = SemSegEvaluator(name, distributed=False, output_dir=None)
    res = inference_on_dataset(model, loader, evaluator)["sem_seg"]
    assert 0.0 <= res["mIoU"] <= 100.0 and 0.0 <= res["pACC"] <= 100.0
    assert res["mIoU"] < 50.0  # random init
    # ground truth fed back as the prediction scores 100
    evaluator.reset()
    for d in DatasetCatalog.get(name):
        gt = np.asarray(Image.open(d["sem_seg_file_name"]), dtype=np.int64)
        pred = torch.as_tensor(np.where(gt == 255, 0, gt))
        evaluator.process([d], [{"sem_seg": F.one_hot(pred, 150).permute(2, 0, 1).float()}])
    res = evaluator.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0) and res["pACC"] == pytest.approx(100.0)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_tta_end_to_end_with_semantic_segmentor(shared_data, tmp_path):
    name = _register_ade_sample(shared_data, tmp_path, "_test_knet_ade_sample_tta")
    cfg = tiny_cfg("FCN", num_classes=150)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 256
    cfg.TEST.AUG.MIN_SIZES, cfg.TEST.AUG.MAX_SIZE = (48, 64), 512
    cfg.DATALOADER.NUM_WORKERS = 0
    model = build_model(cfg).eval()
    tta = SemanticSegmentorWithTTA(cfg, model)
    d = build_detection_test_loader(cfg, name).dataset[0]
    out = tta([d])[0]["sem_seg"]
    assert out.shape == (150, d["height"], d["width"])
    assert torch.allclose(out.sum(0), torch.ones(d["height"], d["width"]), atol=1e-4)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)

