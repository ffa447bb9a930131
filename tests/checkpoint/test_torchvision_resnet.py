"""knet_d2.checkpoint.torchvision_resnet: torchvision / mmdet ResNet names -> D2 names.

The file-level round trip (weights loaded into D2's ResNet, same layer4 output) is in
tools/test_convert_tools.py.
"""
import pytest
import torch

from knet_d2.checkpoint import convert_torchvision_resnet_state_dict, rename_torchvision_resnet_key


def test_rename_torchvision_and_mmdet_dcn_keys():
    assert rename_torchvision_resnet_key("conv1.weight") == "stem.conv1.weight"
    assert rename_torchvision_resnet_key("bn1.running_var") == "stem.conv1.norm.running_var"
    assert rename_torchvision_resnet_key("layer1.0.bn3.bias") == "res2.0.conv3.norm.bias"
    assert rename_torchvision_resnet_key("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert rename_torchvision_resnet_key("layer4.0.downsample.1.weight") == (
        "res5.0.shortcut.norm.weight")
    assert rename_torchvision_resnet_key("layer3.22.conv2.conv_offset.bias") == (
        "res4.22.conv2_offset.bias")
    assert rename_torchvision_resnet_key("layer3.0.conv2_offset.weight") == (
        "res4.0.conv2_offset.weight")
    assert rename_torchvision_resnet_key("layer2.1.conv2.weight") == "res3.1.conv2.weight"
    for unused in ("fc.weight", "layer1.0.bn1.num_batches_tracked", "layer1.0.se.fc.weight",
                   "bn1.num_batches_tracked"):
        assert rename_torchvision_resnet_key(unused) is None


def test_convert_lists_unused_keys_and_rejects_other_state_dicts():
    sd = {"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.ones(1),
          "fc.bias": torch.zeros(1), "layer1.0.bn1.num_batches_tracked": torch.zeros(())}
    converted, unused = convert_torchvision_resnet_state_dict(sd)
    assert list(converted) == ["stem.conv1.weight", "res2.0.conv1.weight"]
    assert converted["res2.0.conv1.weight"] is sd["layer1.0.conv1.weight"]
    assert unused == ["fc.bias", "layer1.0.bn1.num_batches_tracked"]
    with pytest.raises(ValueError, match="not a torchvision ResNet state dict .* as: 0.weight"):
        convert_torchvision_resnet_state_dict({"0.weight": torch.zeros(1)})
