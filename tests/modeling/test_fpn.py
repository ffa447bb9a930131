"""knet_d2.modeling.backbone.fpn: ResNet + FPN without a top block, mmdet FPN init."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from detectron2.structures import ImageList

from knet_d2.config import add_knet_config

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def _backbone_cfg():
    cfg = get_cfg()
    add_knet_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_knet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_backbone_outputs_p2_to_p5_only_and_mmdet_init():
    cfg = _backbone_cfg()
    backbone = build_backbone(cfg).eval()
    shapes = backbone.output_shape()
    assert sorted(shapes) == ["p2", "p3", "p4", "p5"]
    assert [shapes[f"p{i}"].stride for i in range(2, 6)] == [4, 8, 16, 32]
    assert all(s.channels == 256 for s in shapes.values())
    assert backbone.size_divisibility == 32
    # mmdet FPN init: xavier_uniform weights (bound sqrt(6 / (fan_in + fan_out))), zero bias
    lat = backbone.fpn_lateral5  # 1x1, 2048 -> 256
    bound = math.sqrt(6.0 / (2048 + 256))
    assert lat.weight.abs().max() <= bound + 1e-6
    assert lat.weight.abs().max() > 0.9 * bound  # D2's c2_xavier_fill bound would be 0.038
    assert torch.all(lat.bias == 0) and torch.all(backbone.fpn_output2.bias == 0)

    images = ImageList.from_tensors([torch.randn(3, 96, 130), torch.randn(3, 90, 128)], 32)
    with torch.no_grad():
        out = backbone(images.tensor)
    assert sorted(out) == ["p2", "p3", "p4", "p5"]
    for i in range(2, 6):
        assert out[f"p{i}"].shape == (2, 256, 96 // 2**i, 160 // 2**i)
