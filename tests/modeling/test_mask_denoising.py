"""Mask-denoising groups: the jitter, the groups' initial kernels and masks, their losses, and
that they change neither the normal kernels' losses nor inference."""
import pytest
import torch
from detectron2.modeling import build_model

from knet_d2.modeling.criterion import KNetCriterion
from knet_d2.modeling.mask_denoising import MASK_LOGIT, MaskDenoising, jitter_masks
from tests.helpers.knet_parts import C, make_kernel_head
from tests.helpers.tiny_knet import make_input, tiny_cfg


def _square(h, w, y0, x0, side):
    m = torch.zeros(h, w)
    m[y0:y0 + side, x0:x0 + side] = 1.0
    return m


def test_jitter_without_noise_returns_the_mask():
    masks = torch.stack([_square(32, 40, 3, 5, 10), _square(32, 40, 20, 30, 7)])
    out = jitter_masks(masks, shift=0.0, scale=0.0)
    assert out.dtype == torch.bool and torch.equal(out, masks > 0.5)


def test_jitter_moves_and_rescales_within_its_bounds():
    torch.manual_seed(0)
    side, shift, scale = 12, 0.25, 0.2
    masks = _square(64, 64, 26, 26, side).expand(200, 64, 64)
    out = jitter_masks(masks, shift=shift, scale=scale).float()
    area = out.sum(dim=(1, 2))
    assert (out != masks).any(dim=(1, 2)).float().mean() > 0.9  # nearly every mask changes
    lo, hi = (side * (1 - scale) - 1) ** 2, (side * (1 + scale) + 1) ** 2
    assert area.min() >= lo and area.max() <= hi and area.std() > 5
    ys = torch.arange(64.0)
    cy = (out.sum(dim=2) * ys).sum(dim=1) / area
    cx = (out.sum(dim=1) * ys).sum(dim=1) / area
    centre = 26 + (side - 1) / 2
    limit = shift * side + 0.5
    assert (cy - centre).abs().max() <= limit and (cx - centre).abs().max() <= limit
    assert (cy - centre).abs().max() > limit / 2  # shifts do reach toward the bound


def test_jitter_of_no_masks():
    assert jitter_masks(torch.zeros(0, 8, 9), 0.2, 0.2).shape == (0, 8, 9)


def test_queries_start_from_the_ground_truth_and_the_stage0_formula():
    dn = MaskDenoising(shift=0.0, scale=0.0, loss_weight=1.0)
    b, h, w, np_ = 2, 8, 8, 3
    feats = torch.randn(b, C, h, w)
    head = make_kernel_head(num_proposals=np_)
    learned = head.init_kernels.weight[:, :, 0, 0]
    big = torch.stack([_square(16, 16, 0, 0, 8), _square(16, 16, 8, 8, 6),
                       _square(16, 16, 2, 10, 4), _square(16, 16, 10, 0, 4)])
    targets = [{"labels": torch.tensor([0, 1, 2, 0]), "masks": big},  # more things than kernels
               {"labels": torch.tensor([1]), "masks": big[1:2]}]
    with torch.no_grad():
        kernels, logits = dn.queries(targets, feats, head)
    assert kernels.shape == (b, np_, C) and logits.shape == (b, np_, h, w)
    assert set(logits.unique().tolist()) == {-MASK_LOGIT, MASK_LOGIT}
    small = torch.nn.functional.interpolate(big[:, None], size=(h, w), mode="bilinear")[:, 0] > 0.5
    assert torch.equal(logits[0] > 0, small[:3])  # the first Np things, in order
    assert torch.equal(logits[1, 0] > 0, small[1]) and not (logits[1, 1:] > 0).any()
    pooled = torch.einsum("hw,chw->c", small[1].float(), feats[1])
    torch.testing.assert_close(kernels[1, 0], learned[0] + pooled)
    torch.testing.assert_close(kernels[1, 1:], learned[1:])  # empty slots: the learned kernel


@pytest.mark.parametrize("bad", [dict(shift=-0.1), dict(scale=1.0), dict(loss_weight=0.0)])
def test_bad_settings_name_the_config_keys(bad):
    kw = dict(shift=0.2, scale=0.2, loss_weight=1.0) | bad
    with pytest.raises(ValueError, match="MODEL.KNET.DENOISING"):
        MaskDenoising(**kw)


def _criterion(np_=4, t=3):
    cfg = tiny_cfg(num_thing=t, num_stuff=0)
    cfg.MODEL.KNET.NUM_PROPOSALS = np_
    return KNetCriterion(cfg)


def test_losses_use_the_fixed_assignment_and_weight():
    torch.manual_seed(0)
    crit = _criterion()
    masks = torch.stack([_square(16, 16, 0, 0, 8), _square(16, 16, 8, 8, 6)])
    targets = [{"labels": torch.tensor([2, 0]), "masks": masks}]
    right = torch.full((1, 4, 16, 16), -8.0)
    right[0, :2] = masks * 16 - 8
    cls = torch.full((1, 4, 3), -6.0)
    cls[0, 0, 2] = cls[0, 1, 0] = 6.0
    good = [{"mask_logits": right, "cls_logits": cls}]
    swapped = [{"mask_logits": right[:, [1, 0, 2, 3]], "cls_logits": cls[:, [1, 0, 2, 3]]}]
    one = MaskDenoising(shift=0.2, scale=0.2, loss_weight=1.0).losses(crit, good, targets)
    assert set(one) == {"dn_s0_loss_cls", "dn_s0_loss_mask", "dn_s0_loss_dice"}
    worse = MaskDenoising(shift=0.2, scale=0.2, loss_weight=1.0).losses(crit, swapped, targets)
    assert all(worse[k] > 10 * one[k] for k in one)  # kernel j answers for thing j, no matching
    two = MaskDenoising(shift=0.2, scale=0.2, loss_weight=2.0).losses(crit, good, targets)
    for k in one:
        torch.testing.assert_close(two[k], 2 * one[k])


def _models():
    torch.manual_seed(0)
    plain = build_model(tiny_cfg())
    cfg = tiny_cfg()
    cfg.MODEL.KNET.DENOISING.ENABLED = True
    dn = build_model(cfg)
    dn.load_state_dict(plain.state_dict())  # same keys: the groups add no parameters
    return plain, dn


def test_groups_leave_the_normal_losses_and_inference_unchanged():
    plain, dn = _models()
    batch = [make_input(64, 64, [0, 1, 3], seed=1), make_input(48, 64, [2], seed=2)]
    plain.train(), dn.train()
    base, with_dn = plain(batch), dn(batch)
    assert set(with_dn) == set(base) | {f"dn_s{i}_loss_{k}" for i in range(2)
                                        for k in ("cls", "mask", "dice", "rank")}
    for k in base:
        torch.testing.assert_close(with_dn[k], base[k], rtol=1e-4, atol=1e-5)
    sum(with_dn.values()).backward()
    grad = dn.update_heads[0].fc_cls.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    plain.eval(), dn.eval()
    with torch.no_grad():
        a, b = plain(batch), dn(batch)
    assert torch.equal(a[0]["panoptic_seg"][0], b[0]["panoptic_seg"][0])
    torch.testing.assert_close(a[1]["sem_seg"], b[1]["sem_seg"])


def test_groups_with_images_without_things():
    _, dn = _models()
    dn.train()
    losses = dn([make_input(64, 64, []), make_input(48, 64, [3])])  # class 3: stuff only
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
