"""knet_d2.modeling.kernel_update_head: KernelUpdateHead (grouping, kernel interaction, dynamic
conv, class branch, init) and its semantic variant. Tiny dims (tests/helpers/knet_parts.py)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from knet_d2.modeling import KernelUpdateHead
from knet_d2.modeling.kernel_update_head import upsample_masks
from tests.helpers.knet_parts import C, N, make_update_head, randomise_norms

PRIOR_BIAS = -math.log(99.0)  # -4.595

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


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


def test_update_head_soft_sigmoid_grouping_passes_gradients_to_the_masks():
    feats = torch.randn(2, C, 6, 7)
    logits = torch.randn(2, N, 6, 7, requires_grad=True)
    soft = make_update_head(mask_act="sigmoid")
    expected = torch.einsum("bnhw,bchw->bnc", logits.sigmoid(), feats)
    torch.testing.assert_close(soft.assemble(feats, logits), expected)
    soft.assemble(feats, logits).sum().backward()
    assert logits.grad.abs().sum() > 0
    hard = make_update_head()
    assert not hard.assemble(feats, logits).requires_grad  # hard masks: no path to the logits


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
    randomise_norms(head)
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
