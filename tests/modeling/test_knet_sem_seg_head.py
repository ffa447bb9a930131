"""knet_d2.modeling.semantic.knet_sem_seg_head: KNetSemSegHead (losses, soft grouping, the
512/256 updator quirk), the ADE20K / synthetic semantic configs, and evaluation on the ADE
sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import SemSegEvaluator, inference_on_dataset
from detectron2.modeling import build_backbone, build_model
from PIL import Image

from knet_d2.modeling.kernel_update_head import KernelUpdateHead
from knet_d2.modeling.semantic import FCNHead, KNetSemSegHead
from tests.helpers.paths import REPO_ROOT as REPO
from tests.helpers.tiny_semantic import (
    HEADS,
    NUM_CLASSES,
    base_cfg,
    features_for,
    register_ade_sample,
    tiny_cfg,
)

ADE_CONFIGS = sorted((REPO / "configs/ade20k/semantic-segmentation").glob("knet_*.yaml"))


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
        # the 2000-image split, or the 16 000-image one of the 10-minute recipe
        assert cfg.DATASETS.TRAIN in {("knet_synth_sem_seg_train",),
                                      ("knet_synth_sem_seg_train16k",)}, path.name
        assert cfg.DATASETS.TEST == ("knet_synth_sem_seg_val",), path.name
        model = build_model(cfg)
        assert isinstance(model.sem_seg_head, KNetSemSegHead)


# ----------------------------------------------------------------------------- evaluation
def test_sem_seg_evaluator_on_ade_sample(shared_data, tmp_path):
    name = register_ade_sample(shared_data, tmp_path, "_test_knet_ade_sample")
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
