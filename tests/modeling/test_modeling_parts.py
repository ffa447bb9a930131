"""Tests of the shared K-Net model parts: backbone, PE, neck, kernel head, updator, update head.

Tiny dims (C=32, N=5) on CPU; the full-size test only builds modules (no forward).
"""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.structures import ImageList
from torch import nn

from knet_d2.config import add_knet_config
from knet_d2.modeling import (
    KernelGenerationHead,
    KernelUpdateHead,
    KernelUpdator,
    LocalizationFPN,
    SinePositionalEncoding,
    build_kernel_update_head,
    build_knet_neck,
)
from knet_d2.modeling.kernel_update_head import upsample_masks

C = 32
N = 5
PRIOR_BIAS = -math.log(99.0)  # -4.595


def fpn_shapes(channels: int = C):
    return {f"p{i}": ShapeSpec(channels=channels, stride=2**i) for i in range(2, 6)}


def fpn_feats(b: int, h: int, w: int, channels: int = C, gen=None):
    """Random FPN maps for an (h, w) image: P_i has size ceil(h / 2^i) like a padded ResNet."""
    return {
        f"p{i}": torch.randn(b, channels, -(-h // 2**i), -(-w // 2**i), generator=gen)
        for i in range(2, 6)
    }


def make_neck(channels: int = C, **kw) -> LocalizationFPN:
    return LocalizationFPN(
        fpn_shapes(channels), in_features=["p2", "p3", "p4", "p5"], conv_dim=channels, **kw
    )


def make_kernel_head(num_thing=3, num_stuff=2, num_proposals=N, **kw) -> KernelGenerationHead:
    return KernelGenerationHead(
        in_channels=C,
        hidden_dim=C,
        num_proposals=num_proposals,
        num_thing_classes=num_thing,
        num_stuff_classes=num_stuff,
        **kw,
    )


def make_update_head(**kw) -> KernelUpdateHead:
    args = dict(in_channels=C, num_classes=7, num_heads=4, feedforward_channels=64)
    args.update(kw)
    return KernelUpdateHead(**args)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------ positional encoding
def test_sine_pe_matches_per_pixel_formula():
    nf, h, w = 6, 3, 5
    pe = SinePositionalEncoding(nf)(torch.zeros(2, 7, h, w))
    assert pe.shape == (2, 2 * nf, h, w)
    eps, scale = 1e-6, 2 * math.pi
    for ch in range(2 * nf):
        k = ch % nf
        dim_t = 10000.0 ** (2 * (k // 2) / nf)
        fn = math.sin if k % 2 == 0 else math.cos
        for r in range(h):
            for c in range(w):
                # y part first (channels < nf), then x part
                coord = (r + 1) / (h + eps) * scale if ch < nf else (c + 1) / (w + eps) * scale
                expected = fn(coord / dim_t)
                assert pe[0, ch, r, c].item() == pytest.approx(expected, abs=1e-5)
                assert pe[1, ch, r, c].item() == pytest.approx(expected, abs=1e-5)


def test_sine_pe_mask_and_dtype():
    x = torch.zeros(1, 4, 4, 6, dtype=torch.float64)
    pe = SinePositionalEncoding(2)(x)
    assert pe.dtype == torch.float64
    # a padded right half: x coordinates normalised by the valid width (3), not 6
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[..., 3:] = True
    pe_m = SinePositionalEncoding(2)(x, mask)
    xc = 1 / (3 + 1e-6) * 2 * math.pi  # column 0
    assert pe_m[0, 2, 0, 0].item() == pytest.approx(math.sin(xc), abs=1e-6)


# ------------------------------------------------------------------------ backbone
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


# ------------------------------------------------------------------------ neck
@pytest.mark.parametrize("b,h,w", [(1, 96, 160), (2, 128, 64), (3, 64, 96)])
def test_neck_padded_matches_official_x2_chain(b, h, w):
    neck = make_neck().eval()
    feats = fpn_feats(b, h, w)
    with torch.no_grad():
        loc, sem = neck(feats)
    assert loc.shape == sem.shape == (b, C, h // 8, w // 8)

    def up(x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    lv = neck.convs_all_levels
    with torch.no_grad():
        p5 = feats["p5"] + SinePositionalEncoding(C // 2)(feats["p5"])
        s = (
            lv[0].conv0(feats["p2"])
            + lv[1].conv0(feats["p3"])
            + lv[2].conv1(up(lv[2].conv0(feats["p4"])))
            + lv[3].conv2(up(lv[3].conv1(up(lv[3].conv0(p5)))))
        )
        torch.testing.assert_close(loc, neck.conv_pred(s))
        torch.testing.assert_close(sem, neck.aux_convs[0](s))
    assert not torch.allclose(loc, sem)


@pytest.mark.parametrize("b,h,w", [(1, 97, 131), (2, 45, 77), (3, 33, 70)])
def test_neck_unpadded_odd_sizes(b, h, w):
    neck = make_neck()
    feats = fpn_feats(b, h, w)
    loc, sem = neck(feats)
    assert loc.shape == sem.shape == (b, C) + tuple(feats["p3"].shape[-2:])
    assert torch.isfinite(loc).all() and (loc >= 0).all()  # ends with ReLU


def test_neck_structure_init_and_pe_level():
    neck = make_neck()
    names = {n for n, _ in neck.named_parameters()}
    convs = {n.rsplit(".conv.weight", 1)[0] for n in names if n.endswith(".conv.weight")}
    assert convs == {
        "convs_all_levels.0.conv0", "convs_all_levels.1.conv0", "convs_all_levels.2.conv0",
        "convs_all_levels.2.conv1", "convs_all_levels.3.conv0", "convs_all_levels.3.conv1",
        "convs_all_levels.3.conv2", "conv_pred", "aux_convs.0",
    }
    assert neck.convs_all_levels[0].conv0.conv.stride == (2, 2)
    assert neck.convs_all_levels[3].conv1.conv.stride == (1, 1)
    assert neck.conv_pred.conv.kernel_size == (1, 1)
    assert all(m.bias is None for m in neck.modules() if isinstance(m, nn.Conv2d))
    assert all(isinstance(m.gn, nn.GroupNorm) and m.gn.num_groups == 32
               for m in neck.modules() if hasattr(m, "gn"))
    big = make_neck(channels=256)
    w = big.convs_all_levels[3].conv0.conv.weight
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4

    # PE only on P5: a neck without PE differs only through P5
    no_pe = make_neck(pos_encoding_level=-1)
    no_pe.load_state_dict(neck.state_dict())
    feats = fpn_feats(1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(neck(feats)[0], no_pe(feats)[0])
        feats_pe = dict(feats, p5=feats["p5"] + SinePositionalEncoding(C // 2)(feats["p5"]))
        torch.testing.assert_close(neck(feats)[0], no_pe(feats_pe)[0])


# ------------------------------------------------------------------------ kernel head
def test_kernel_head_outputs_and_obj_feat_loop():
    head = make_kernel_head()
    loc, sem = torch.rand(2, C, 9, 11), torch.rand(2, C, 9, 11)
    out = head(loc, sem)
    assert set(out) == {"features", "mask_logits", "seg_logits", "kernels", "stuff_kernels",
                        "stuff_mask_logits"}
    feats, m0 = out["features"], out["mask_logits"]
    assert feats.shape == (2, C, 9, 11) and m0.shape == (2, N, 9, 11)
    assert out["seg_logits"].shape == (2, 5, 9, 11)
    assert out["kernels"].shape == (2, N, C)

    # F = sem + loc after their convs; M0 = init_kernels(loc after conv)
    loc_c, sem_c = head.loc_convs[0](loc), head.seg_convs[0](sem)
    torch.testing.assert_close(feats, loc_c + sem_c)
    torch.testing.assert_close(m0, F.conv2d(loc_c, head.init_kernels.weight))

    frac = (m0.sigmoid() > 0.5).float().mean().item()
    assert 0.05 < frac < 0.95  # the check below is not vacuous
    w = head.init_kernels.weight[:, :, 0, 0]
    for b in range(2):
        for n in range(N):
            sel = m0[b, n].sigmoid() > 0.5
            obj = feats[b][:, sel].sum(dim=1)  # un-normalised sum over the mask
            torch.testing.assert_close(out["kernels"][b, n], w[n] + obj, rtol=1e-5, atol=1e-4)

    # stuff kernels/masks are the stuff part of conv_seg, without object features
    torch.testing.assert_close(out["stuff_kernels"][1], head.conv_seg.weight[3:, :, 0, 0])
    torch.testing.assert_close(out["stuff_mask_logits"], out["seg_logits"][:, 3:])
    kernels, masks = KernelGenerationHead.append_stuff(out)
    assert kernels.shape == (2, N + 2, C) and masks.shape == (2, N + 2, 9, 11)
    torch.testing.assert_close(kernels[:, :N], out["kernels"])
    torch.testing.assert_close(masks[:, N:], out["seg_logits"][:, 3:])


@pytest.mark.parametrize("num_thing,num_stuff", [(1, 0), (1, 3), (4, 0)])
def test_kernel_head_custom_class_counts(num_thing, num_stuff):
    head = make_kernel_head(num_thing=num_thing, num_stuff=num_stuff)
    out = head(torch.rand(3, C, 7, 5), torch.rand(3, C, 7, 5))
    assert out["seg_logits"].shape == (3, num_thing + num_stuff, 7, 5)
    assert ("stuff_kernels" in out) == (num_stuff > 0)
    kernels, masks = head.append_stuff(out)
    assert kernels.shape == (3, N + num_stuff, C) and masks.shape == (3, N + num_stuff, 7, 5)
    if num_stuff:
        assert out["stuff_kernels"].shape == (3, num_stuff, C)
        torch.testing.assert_close(out["stuff_kernels"][0],
                                   head.conv_seg.weight[num_thing:, :, 0, 0])


def test_kernel_head_init_statistics():
    head = KernelGenerationHead(in_channels=256, hidden_dim=256, num_proposals=100,
                                num_thing_classes=80, num_stuff_classes=53)
    w = head.init_kernels.weight
    assert w.shape == (100, 256, 1, 1) and head.init_kernels.bias is None
    assert abs(w.std().item() - 1.0) < 0.03 and abs(w.mean().item()) < 0.03
    assert torch.allclose(head.conv_seg.bias, torch.full((133,), -4.59512), atol=1e-4)
    assert abs(head.conv_seg.weight.std().item() - 0.01) < 1e-3
    assert abs(head.loc_convs[0].conv.weight.std().item() - 0.01) < 1e-3
    assert head.loc_convs[0].conv.bias is None and head.seg_convs[0].conv.bias is None


# ------------------------------------------------------------------------ updator
def _updator_formula(u: KernelUpdator, fk: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The docs/reference.md §1.4 step-3 equations written independently of the module."""
    cf = u.feat_channels
    phi = fk @ u.dynamic_layer.weight.T + u.dynamic_layer.bias
    kap = k @ u.input_layer.weight.T + u.input_layer.bias
    phi_in, phi_out = phi[..., :cf], phi[..., cf:]
    kap_in, kap_out = kap[..., :cf], kap[..., cf:]
    fg = kap_in * phi_in

    def ln(x, m):
        return F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, m.eps)

    g_k = torch.sigmoid(ln(F.linear(fg, u.input_gate.weight, u.input_gate.bias), u.input_norm_in))
    g_f = torch.sigmoid(ln(F.linear(fg, u.update_gate.weight, u.update_gate.bias), u.norm_in))
    kt = g_f * ln(phi_out, u.norm_out) + g_k * ln(kap_out, u.input_norm_out)
    return torch.relu(ln(F.linear(kt, u.fc_layer.weight, u.fc_layer.bias), u.fc_norm))


def _randomise_norms(module: nn.Module):
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)


def test_updator_matches_equations():
    u = KernelUpdator(C)
    _randomise_norms(u)
    fk, k = torch.randn(2, N, C), torch.randn(2, N, C)
    out = u(fk, k)
    assert out.shape == (2, N, C)
    torch.testing.assert_close(out, _updator_formula(u, fk, k))
    # the two inputs play different roles
    assert not torch.allclose(out, u(k, fk))


def test_updator_split_halves_equals_loop_over_halves():
    u = KernelUpdator(C)
    _randomise_norms(u)
    fk, k = torch.randn(3, N, 2 * C), torch.randn(3, N, 2 * C)
    out = u(fk, k)
    assert out.shape == (3, N, 2 * C)
    halves = [u(fk[..., i * C:(i + 1) * C], k[..., i * C:(i + 1) * C]) for i in range(2)]
    torch.testing.assert_close(out, torch.cat(halves, dim=-1))
    with pytest.raises(AssertionError):
        u(torch.randn(1, N, C + 3), torch.randn(1, N, C + 3))


# ------------------------------------------------------------------------ update head
def test_update_head_shapes_and_upsample():
    head = make_update_head()
    for b in (1, 2, 3):
        feats = torch.randn(b, C, 9, 13)
        kernels, masks, cls = head(feats, torch.randn(b, N, C), torch.randn(b, N, 9, 13))
        assert kernels.shape == (b, N, C) and masks.shape == (b, N, 9, 13)
        assert cls.shape == (b, N, 7)
        # previous masks at another resolution (e.g. stride 4) are resized for grouping
        _, masks2, _ = head(feats, kernels, torch.randn(b, N, 18, 26))
        assert masks2.shape == (b, N, 9, 13)
    up = upsample_masks(masks, 2)
    assert up.shape == (3, N, 18, 26)
    torch.testing.assert_close(
        up, F.interpolate(masks, scale_factor=2, mode="bilinear", align_corners=False)
    )
    assert upsample_masks(masks, 1) is masks


def test_update_head_hard_grouping_equals_masked_sum_loop():
    head = make_update_head()
    feats, logits = torch.randn(2, C, 6, 7), torch.randn(2, N, 6, 7)
    fk = head.assemble(feats, logits)
    for b in range(2):
        for n in range(N):
            sel = torch.sigmoid(logits[b, n]) > 0.5
            torch.testing.assert_close(fk[b, n], feats[b][:, sel].sum(1), rtol=1e-5, atol=1e-5)
    # masks of a different size: bilinear resize to F's size first, then threshold
    big = torch.randn(2, N, 12, 14)
    small = F.interpolate(big, size=(6, 7), mode="bilinear", align_corners=False)
    torch.testing.assert_close(head.assemble(feats, big), head.assemble(feats, small))
    # a custom threshold is honoured
    head.hard_mask_thr = 0.9
    g = head.group_masks(logits, (6, 7))
    assert torch.equal(g, (logits.sigmoid() > 0.9).float())


def test_update_head_softmax_grouping():
    head = make_update_head(mask_act="softmax", num_classes=0)
    feats, logits = torch.randn(2, C, 6, 7), torch.randn(2, N, 6, 7)
    g = head.group_masks(logits, (6, 7))
    torch.testing.assert_close(g.sum(1), torch.ones(2, 6, 7))
    expected = torch.einsum("bnhw,bchw->bnc", logits.softmax(1), feats)
    torch.testing.assert_close(head.assemble(feats, logits), expected)


def _manual_mha(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention over the N kernels of each image separately, x: (B, N, C)."""
    b, n, c = x.shape
    h = mha.num_heads
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    out = torch.empty_like(x)
    for i in range(b):  # explicit per image: attention must not mix images
        heads = []
        for j in range(h):
            sl = slice(j * c // h, (j + 1) * c // h)
            att = (q[i, :, sl] @ k[i, :, sl].T / math.sqrt(c // h)).softmax(-1)
            heads.append(att @ v[i, :, sl])
        out[i] = torch.cat(heads, -1)
    return F.linear(out, mha.out_proj.weight, mha.out_proj.bias)


def test_update_head_interaction_post_norm_residuals():
    head = make_update_head().eval()
    _randomise_norms(head)
    x = torch.randn(3, N, C)
    a = head.attention_norm(x + _manual_mha(head.attention, x))
    expected = head.ffn_norm(a + head.ffn(a))
    torch.testing.assert_close(head.interact(x), expected, rtol=1e-5, atol=1e-5)
    # FFN layout: Linear(C, Cff) -> ReLU -> Linear(Cff, C)
    l0, l1 = head.ffn.layers[0][0], head.ffn.layers[1]
    torch.testing.assert_close(head.ffn(a), F.linear(torch.relu(F.linear(a, l0.weight, l0.bias)),
                                                     l1.weight, l1.bias))
    # zeroed attention output projection -> the attention block is LN(x)
    with torch.no_grad():
        head.attention.out_proj.weight.zero_()
        head.attention.out_proj.bias.zero_()
        a0 = head.attention_norm(x)
        torch.testing.assert_close(head.interact(x), head.ffn_norm(a0 + head.ffn(a0)))
        l1.weight.zero_()
        l1.bias.zero_()
        torch.testing.assert_close(head.interact(x), head.ffn_norm(head.attention_norm(x)))


def test_update_head_dynamic_conv_and_class_branch():
    head = make_update_head(num_cls_fcs=1, num_mask_fcs=2)
    feats, kernels, logits = torch.randn(2, C, 5, 6), torch.randn(2, N, C), torch.randn(2, N, 5, 6)
    new_k, masks, cls = head(feats, kernels, logits)
    fi = head.feat_transform(feats)
    # the stage's own steps chained
    torch.testing.assert_close(
        new_k, head.interact(head.kernel_update_conv(head.assemble(fi, logits), kernels))
    )
    mk = head.fc_mask(head.mask_fcs(new_k))
    for b in range(2):  # per-image 1x1 conv of Fi with the generated kernels
        ref = F.conv2d(fi[b:b + 1], mk[b].view(N, C, 1, 1))[0]
        torch.testing.assert_close(masks[b], ref, rtol=1e-4, atol=1e-4)
    lin, ln = head.cls_fcs[0], head.cls_fcs[1]
    assert lin.bias is None
    torch.testing.assert_close(cls, head.fc_cls(torch.relu(ln(lin(new_k)))))
    assert len([m for m in head.mask_fcs if isinstance(m, nn.Linear)]) == 2


def test_update_head_init():
    head = make_update_head(in_channels=256, num_classes=133, num_heads=8,
                            feedforward_channels=2048)
    assert torch.allclose(head.fc_cls.bias, torch.full((133,), PRIOR_BIAS), atol=1e-4)
    for name, p in head.named_parameters():
        if p.dim() > 1:
            fan_out, fan_in = p.shape[0], p[0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert p.abs().max() <= bound + 1e-6, name
            assert p.abs().max() > 0.9 * bound, name
    # semantic flavour keeps the PyTorch default init (Linear bound 1/sqrt(fan_in) < xavier's)
    sem = make_update_head(in_channels=256, num_classes=0, xavier_init=False)
    assert sem.fc_mask.weight.abs().max() <= 1 / 16 + 1e-6
    assert head.fc_mask.weight.abs().max() > 1 / 16 * 1.5


def test_update_head_semantic_variant_512_256_quirk():
    head = make_update_head(in_channels=2 * C, num_classes=0, updator_channels=C,
                            mask_act="softmax", xavier_init=False)
    assert head.fc_cls is None and head.cls_fcs is None
    assert head.kernel_update_conv.dynamic_layer.weight.shape == (2 * C, C)
    assert head.attention.in_proj_weight.shape == (6 * C, 2 * C)
    feats = torch.randn(2, 2 * C, 8, 8)
    kernels = torch.randn(2, 11, 2 * C)
    k1, m1, cls = head(feats, kernels, torch.randn(2, 11, 8, 8))
    assert cls is None and k1.shape == (2, 11, 2 * C) and m1.shape == (2, 11, 8, 8)
    # the updator sees the two C-chunks as independent items
    fi = head.feat_transform(feats)
    fk = head.assemble(fi, torch.zeros(2, 11, 8, 8))
    halves = [head.kernel_update_conv(fk[..., i * C:(i + 1) * C], kernels[..., i * C:(i + 1) * C])
              for i in range(2)]
    torch.testing.assert_close(head.kernel_update_conv(fk, kernels), torch.cat(halves, -1))


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
    assert head.fc_cls.out_features == 133 and head.mask_upsample_stride == 2
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


def test_semantic_head_keys_512_quirk():
    """mmseg FCN/PSP/ASPP update head: 512-d MHA/FFN/fcs, 256-d updator, no class branch."""
    head = KernelUpdateHead(in_channels=512, num_classes=0, updator_channels=256,
                            mask_act="softmax", xavier_init=False)
    sd = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert not any(k.startswith(("cls_fcs", "fc_cls")) for k in sd)
    assert sd["attention.in_proj_weight"] == (1536, 512)
    assert sd["ffn.layers.0.0.weight"] == (2048, 512)
    assert sd["fc_mask.weight"] == (512, 512) and sd["feat_transform.weight"] == (512, 512, 1, 1)
    assert sd["kernel_update_conv.dynamic_layer.weight"] == (512, 256)
    assert sd["kernel_update_conv.fc_norm.weight"] == (256,)
