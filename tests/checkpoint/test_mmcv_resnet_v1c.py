"""knet_d2.checkpoint.mmcv_resnet_v1c: mmcv / mmseg ResNetV1c names -> D2 names.

The file-level round trip (every key of the D2 backbone filled) is in tools/test_convert_tools.py.
"""
import pytest
import torch
from detectron2.modeling import build_backbone

from knet_d2.checkpoint import convert_mmcv_resnet_v1c_state_dict
from tests.helpers.paths import REPO_ROOT as REPO
from tests.helpers.tiny_semantic import base_cfg


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
