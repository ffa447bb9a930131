"""knet_d2.checkpoint.swin: official Swin ImageNet checkpoints -> knet_d2 Swin names.

The file-level round trips (loaded into Swin + FPN and plain Swin models) are in
tools/test_convert_tools.py.
"""
import pytest
import torch

from knet_d2.checkpoint import convert_swin_state_dict


def _official(prefix=""):
    return {
        f"{prefix}patch_embed.proj.weight": torch.randn(8, 3, 4, 4),
        f"{prefix}layers.0.blocks.0.norm1.weight": torch.randn(8),
        f"{prefix}layers.0.blocks.1.attn_mask": torch.zeros(4, 9, 9),
        f"{prefix}norm.weight": torch.ones(8),
        f"{prefix}head.weight": torch.randn(10, 8),
    }


def test_ddp_prefix_stripped_and_classifier_parts_dropped():
    sd = _official("module.")
    out, dropped = convert_swin_state_dict(sd)
    assert list(out) == ["patch_embed.proj.weight", "layers.0.blocks.0.norm1.weight"]
    assert out["patch_embed.proj.weight"] is sd["module.patch_embed.proj.weight"]
    assert dropped == ["head.weight", "layers.0.blocks.1.attn_mask", "norm.weight"]
    assert "module.head.weight" in sd  # the input is not changed


def test_classification_ape_is_reshaped_and_checked():
    sd = _official()
    sd["absolute_pos_embed"] = torch.arange(2 * 9 * 8.0).reshape(2, 9, 8)[:1]  # (1, L=9, C=8)
    out, _ = convert_swin_state_dict(sd)
    ape = out["absolute_pos_embed"]
    assert ape.shape == (1, 8, 3, 3)
    assert torch.equal(ape[0, :, 1, 2], sd["absolute_pos_embed"][0, 5])  # token 5 = (1, 2)
    sd["absolute_pos_embed"] = torch.zeros(1, 8, 8)
    with pytest.raises(ValueError, match=r"absolute_pos_embed \(1, 8, 8\): token count not square"):
        convert_swin_state_dict(sd)


def test_other_layouts_are_refused_by_name():
    with pytest.raises(ValueError, match="mmdet/mmseg-layout Swin"):
        convert_swin_state_dict({"patch_embed.projection.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"not a Swin checkpoint .*first keys: \['conv1.weight'\]"):
        convert_swin_state_dict({"conv1.weight": torch.zeros(1)})
    sd = _official()
    sd["layers.0.blocks.0.norm1.bias"] = [1.0]
    with pytest.raises(ValueError, match="not tensors"):
        convert_swin_state_dict(sd)
