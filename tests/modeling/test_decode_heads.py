"""The mmseg-style decode heads of semantic K-Net: knet_d2.modeling.semantic.decode_heads (FCN,
PSP, ASPP, the mmseg cross-entropy) and uper_head (UPerNet), alone and as SemanticSegmentor
heads."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_backbone, build_model
from torch import nn

from knet_d2.modeling.semantic import ASPPHead, FCNHead, PSPHead, UPerHead, mmseg_cross_entropy
from tests.helpers.tiny_semantic import HEADS, NUM_CLASSES, features_for, tiny_cfg


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
