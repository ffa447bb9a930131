"""knet_d2.modeling.kernel_head: KernelGenerationHead outputs (object-feature loop, stuff
kernels), class counts and init. Tiny dims (tests/helpers/knet_parts.py)."""
import pytest
import torch
import torch.nn.functional as F

from knet_d2.modeling import KernelGenerationHead
from tests.helpers.knet_parts import C, N, make_kernel_head

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


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


def test_kernel_head_soft_grouping_weights_the_sums_by_sigmoid():
    hard, soft = make_kernel_head(), make_kernel_head(soft_grouping=True)
    soft.load_state_dict(hard.state_dict())
    loc, sem = torch.rand(2, C, 9, 11), torch.rand(2, C, 9, 11)
    a, b = hard(loc, sem), soft(loc, sem)
    torch.testing.assert_close(b["mask_logits"], a["mask_logits"])
    w = soft.init_kernels.weight[:, :, 0, 0]
    expected = w + torch.einsum("bnhw,bchw->bnc", b["mask_logits"].sigmoid(), b["features"])
    torch.testing.assert_close(b["kernels"], expected)
    assert not torch.allclose(b["kernels"], a["kernels"])


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
