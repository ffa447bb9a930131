"""knet_d2.checkpoint.mmcv_resnet_v1c: mmcv / mmseg ResNetV1c names -> D2 names.

The file-level round trip (every key of the D2 backbone filled) is in tools/test_convert_tools.py.
"""
import pytest
import torch

from knet_d2.checkpoint import convert_mmcv_resnet_v1c_state_dict


def test_unexpected_stem_key_is_an_error():
    with pytest.raises(KeyError, match="stem.2"):
        convert_mmcv_resnet_v1c_state_dict({"stem.2.weight": torch.zeros(1)})


def test_renames_stem_blocks_and_shortcut_and_drops_the_classifier():
    sd = {"backbone.stem.4.running_mean": torch.zeros(2), "layer2.0.bn3.weight": torch.ones(2),
          "layer3.0.downsample.1.bias": torch.zeros(2), "layer1.1.conv2.weight": torch.ones(1),
          "fc.weight": torch.zeros(3)}
    out = convert_mmcv_resnet_v1c_state_dict({"state_dict": sd})
    assert sorted(out) == ["res2.1.conv2.weight", "res3.0.conv3.norm.weight",
                           "res4.0.shortcut.norm.bias", "stem.conv2.norm.running_mean"]
    assert out["res3.0.conv3.norm.weight"] is sd["layer2.0.bn3.weight"]
