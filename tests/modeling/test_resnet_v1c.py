"""knet_d2.modeling.semantic.resnet_v1c: ResNetV1c (deep stem, contract dilation), D8 and D32."""
from __future__ import annotations

import pytest
import torchvision
from detectron2.modeling import build_backbone

from knet_d2.modeling.semantic.resnet_v1c import stage_dilations
from tests.helpers.paths import REPO_ROOT as REPO
from tests.helpers.tiny_semantic import base_cfg, features_for, tiny_cfg


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
