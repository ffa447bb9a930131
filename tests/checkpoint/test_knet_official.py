"""knet_d2.checkpoint.knet_official: recognising official K-Net releases (layout, backbone).

Conversions of whole official-layout models are in test_knet_converter.py and
test_official_manifests.py.
"""
import pytest
import torch

from knet_d2.checkpoint import describe_backbone, official_layout
from knet_d2.modeling.backbone.resnet_depths import RESNET_BLOCKS_PER_STAGE


def _mmdet_resnet_keys(blocks, bottleneck, dcn_stages=()):
    keys = {"backbone.conv1.weight": torch.zeros(1), "rpn_head.conv_seg.weight": torch.zeros(1)}
    for stage, n in enumerate(blocks, start=1):
        for j in range(n):
            for c in (1, 2, 3) if bottleneck else (1, 2):
                keys[f"backbone.layer{stage}.{j}.conv{c}.weight"] = torch.zeros(1)
            if stage in dcn_stages:
                keys[f"backbone.layer{stage}.{j}.conv2.conv_offset.weight"] = torch.zeros(1)
    return keys


@pytest.mark.parametrize("depth", sorted(RESNET_BLOCKS_PER_STAGE))
def test_every_resnet_depth_is_named(depth):
    keys = _mmdet_resnet_keys(RESNET_BLOCKS_PER_STAGE[depth], bottleneck=depth >= 50)
    assert official_layout(keys) == "mmdet"
    assert describe_backbone(keys) == f"ResNet-{depth}"


def test_dcn_stages_and_unknown_depths():
    keys = _mmdet_resnet_keys((3, 4, 23, 3), True, dcn_stages=(2, 3, 4))
    assert describe_backbone(keys) == "ResNet-101 + DCN (res3-res5)"
    # basic blocks in a ResNet-50 arrangement: no standard depth
    assert describe_backbone(_mmdet_resnet_keys((3, 4, 6, 3), False)) == "ResNet-34"
    assert describe_backbone(_mmdet_resnet_keys((1, 1, 1, 1), True)) == (
        "ResNet-? (blocks [1, 1, 1, 1])")
    assert official_layout({"backbone.conv1.weight": 1, "sem_seg_head.x": 1}) is None
    assert official_layout({"decode_head.conv_seg.weight": 1}) == "mmseg"
