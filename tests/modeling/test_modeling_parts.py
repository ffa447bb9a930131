"""The shared K-Net model parts together: gradients through neck, kernel head and update heads;
the parts built from the config, and their full-size state dicts against the official keys.

Each part alone: test_position_encoding.py, test_fpn.py, test_neck.py, test_kernel_head.py,
test_kernel_updator.py, test_kernel_update_head.py. Tiny dims (C=32, N=5) on CPU; the full-size
test only builds modules (no forward).
"""
import re

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from knet_d2.config import add_knet_config
from knet_d2.modeling import (
    KernelGenerationHead,
    KernelUpdateHead,
    LocalizationFPN,
    build_kernel_update_head,
    build_knet_neck,
)
from tests.helpers.knet_parts import (
    fpn_feats,
    fpn_shapes,
    make_kernel_head,
    make_neck,
    make_update_head,
)

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def test_gradients_reach_every_parameter():
    neck, khead = make_neck(), make_kernel_head()
    heads = nn.ModuleList([make_update_head() for _ in range(2)])
    loc, sem = neck(fpn_feats(2, 64, 96))
    out = khead(loc, sem)
    kernels, masks = khead.append_stuff(out)
    total = (out["seg_logits"] * torch.randn_like(out["seg_logits"])).sum()
    total = total + (out["mask_logits"] * torch.randn_like(out["mask_logits"])).sum()
    for head in heads:
        kernels, masks, cls = head(out["features"], kernels, masks)
        total = total + (masks * torch.randn_like(masks)).sum()
        total = total + (cls * torch.randn_like(cls)).sum()
    total.backward()
    for mod in (neck, khead, heads):
        for name, p in mod.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------ cfg + full size
def _knet_cfg():
    cfg = get_cfg()
    add_knet_config(cfg)
    return cfg


def test_from_config_defaults():
    cfg = _knet_cfg()
    neck = build_knet_neck(cfg, fpn_shapes(256))
    assert isinstance(neck, LocalizationFPN) and neck.out_stride == 8
    khead = KernelGenerationHead(cfg)
    assert khead.conv_seg.out_channels == 133 and khead.num_proposals == 100
    head = build_kernel_update_head(cfg)
    assert isinstance(head, KernelUpdateHead)
    assert head.fc_cls.out_features == 133
    assert head.mask_act == "hard_sigmoid" and head.hard_mask_thr == 0.5
    assert head.attention.num_heads == 8 and head.ffn.layers[0][0].out_features == 2048
    cfg.MODEL.KNET.NUM_STUFF_CLASSES = 0
    assert KernelGenerationHead(cfg).conv_seg.out_channels == 80
    assert build_kernel_update_head(cfg).fc_cls.out_features == 80


def _official_det_keys(num_classes: int):
    """Official mmdet state-dict keys of the K-Net head parts (docs/reference.md §4.3) -> shapes."""
    c, keys = 256, {}

    def conv_gn(prefix, k):
        keys[f"{prefix}.conv.weight"] = (c, c, k, k)
        keys[f"{prefix}.gn.weight"] = keys[f"{prefix}.gn.bias"] = (c,)

    fpn = "rpn_head.localization_fpn"
    for lvl, n in enumerate([1, 1, 2, 3]):
        for j in range(n):
            conv_gn(f"{fpn}.convs_all_levels.{lvl}.conv{j}", 3)
    conv_gn(f"{fpn}.conv_pred", 1)
    conv_gn(f"{fpn}.aux_convs.0", 1)
    keys["rpn_head.init_kernels.weight"] = (100, c, 1, 1)
    keys["rpn_head.conv_seg.weight"] = (num_classes, c, 1, 1)
    keys["rpn_head.conv_seg.bias"] = (num_classes,)
    conv_gn("rpn_head.loc_convs.0", 1)
    conv_gn("rpn_head.seg_convs.0", 1)
    for s in range(3):
        p = f"roi_head.mask_head.{s}"
        keys.update({
            f"{p}.attention.attn.in_proj_weight": (3 * c, c),
            f"{p}.attention.attn.in_proj_bias": (3 * c,),
            f"{p}.attention.attn.out_proj.weight": (c, c),
            f"{p}.attention.attn.out_proj.bias": (c,),
            f"{p}.feat_transform.conv.weight": (c, c, 1, 1),
            f"{p}.feat_transform.conv.bias": (c,),
            f"{p}.ffn.layers.0.0.weight": (2048, c),
            f"{p}.ffn.layers.0.0.bias": (2048,),
            f"{p}.ffn.layers.1.weight": (c, 2048),
            f"{p}.ffn.layers.1.bias": (c,),
            f"{p}.cls_fcs.0.weight": (c, c),
            f"{p}.fc_cls.weight": (num_classes, c),
            f"{p}.fc_cls.bias": (num_classes,),
            f"{p}.mask_fcs.0.weight": (c, c),
            f"{p}.fc_mask.weight": (c, c),
            f"{p}.fc_mask.bias": (c,),
        })
        for ln in ("attention_norm", "ffn_norm", "cls_fcs.1", "mask_fcs.1"):
            keys[f"{p}.{ln}.weight"] = keys[f"{p}.{ln}.bias"] = (c,)
        u = f"{p}.kernel_update_conv"
        for lin, shape in [("dynamic_layer", (2 * c, c)), ("input_layer", (2 * c, c)),
                           ("input_gate", (c, c)), ("update_gate", (c, c)), ("fc_layer", (c, c))]:
            keys[f"{u}.{lin}.weight"] = shape
            keys[f"{u}.{lin}.bias"] = (shape[0],)
        for ln in ("norm_in", "norm_out", "input_norm_in", "input_norm_out", "fc_norm"):
            keys[f"{u}.{ln}.weight"] = keys[f"{u}.{ln}.bias"] = (c,)
    return keys


def official_to_ours(key: str) -> str:
    """The documented renames: module prefixes + mmcv wrappers removed."""
    key = key.replace("rpn_head.localization_fpn.", "neck.")
    key = key.replace("rpn_head.", "kernel_head.")
    key = re.sub(r"^roi_head\.mask_head\.(\d+)\.", r"update_heads.\1.", key)
    key = key.replace(".attention.attn.", ".attention.")
    return key.replace(".feat_transform.conv.", ".feat_transform.")


@pytest.mark.parametrize("num_stuff,part", [(53, "neck"), (53, "kernel_head"),
                                            (53, "update_heads"), (0, "kernel_head"),
                                            (0, "update_heads")])
def test_full_size_state_dict_matches_official_keys(num_stuff, part):
    cfg = _knet_cfg()
    cfg.MODEL.KNET.NUM_STUFF_CLASSES = num_stuff
    if part == "neck":
        module = build_knet_neck(cfg, fpn_shapes(256))
    elif part == "kernel_head":
        module = KernelGenerationHead(cfg)
    else:
        module = nn.ModuleList(build_kernel_update_head(cfg) for _ in range(3))
    ours = {f"{part}.{k}": tuple(v.shape) for k, v in module.state_dict().items()}
    expected = {official_to_ours(k): v for k, v in _official_det_keys(80 + num_stuff).items()}
    expected = {k: v for k, v in expected.items() if k.startswith(part + ".")}
    assert ours == expected
