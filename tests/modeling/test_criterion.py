"""KNetCriterion: every loss against hand-computed values, target construction, matching rule."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from knet_d2 import add_knet_config
from knet_d2.modeling import criterion as criterion_module
from knet_d2.modeling.criterion import KNetCriterion, dice_loss
from knet_d2.modeling.matcher import HungarianMatcher

LN2 = math.log(2.0)
POS_AT_HALF = 0.25 * 0.25 * LN2  # focal, target 1, p = 0.5
NEG_AT_HALF = 0.75 * 0.25 * LN2  # focal, target 0, p = 0.5


def make(t, s, np_):
    return KNetCriterion(
        matcher=HungarianMatcher(), num_thing_classes=t, num_stuff_classes=s, num_proposals=np_
    )


def focal_ref(logits, target, alpha=0.25, gamma=2.0):
    """Element-wise sigmoid focal loss written out from its definition."""
    p = logits.sigmoid()
    return -alpha * target * (1 - p) ** gamma * torch.log(p) - (1 - alpha) * (1 - target) * (
        p**gamma
    ) * torch.log(1 - p)


def empty_target(h, w, panoptic=False):
    t = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, h, w)}
    if panoptic:
        t["stuff_labels"] = torch.zeros(0, dtype=torch.long)
        t["stuff_masks"] = torch.zeros(0, h, w)
    return t


def test_dice_loss_hand_value():
    logits = torch.zeros(1, 2, 2)  # p = 0.5
    target = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    # sum(pt) = 1.5, sum(p^2) = 1, sum(t^2) = 3
    assert dice_loss(logits, target).item() == pytest.approx(1 - 3.0 / 4.002, abs=1e-6)


def test_stage_losses_instance_hand_values():
    crit = make(2, 0, 3)
    mask_logits = torch.zeros(1, 3, 2, 2)
    mask_logits[0, 1] = torch.tensor([[0.0, math.log(3)], [-math.log(3), 0.0]])
    # p = [[.5, .75], [.25, .5]]
    target = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])
    stage = {"mask_logits": mask_logits, "cls_logits": torch.zeros(1, 3, 2)}
    targets = [{"labels": torch.tensor([1]), "masks": target}]
    matches = [(torch.tensor([1]), torch.tensor([0]))]
    losses = crit.stage_losses(stage, matches, targets, prefix="s7_")
    assert set(losses) == {"s7_loss_cls", "s7_loss_mask", "s7_loss_dice"}
    bce = (LN2 + 0.5 * (math.log(4 / 3) + math.log(4)) + math.log(4 / 3) + LN2) / 4
    assert losses["s7_loss_mask"].item() == pytest.approx(bce, abs=1e-6)
    dice = 1 - 2 * 1.375 / (1.125 + 2.25 + 2e-3)
    assert losses["s7_loss_dice"].item() == pytest.approx(4 * dice, abs=1e-5)
    # 3 kernels x 2 thing classes: 1 positive, 5 negatives; num_pos = 1; weight 2
    assert losses["s7_loss_cls"].item() == pytest.approx(
        2 * (POS_AT_HALF + 5 * NEG_AT_HALF), abs=1e-6
    )


def test_stage_cls_label_weights_and_stuff_fixed_assignment():
    t, s, np_ = 2, 2, 2  # kernels 0,1 things; kernel 2 <-> class 2, kernel 3 <-> class 3
    crit = make(t, s, np_)
    cls = torch.full((1, 4, 4), 8.0)  # un-weighted entries: would add a lot if counted
    cls[0, :2, :2] = 0.0  # thing kernels x thing columns
    cls[0, 2, 2] = 0.0
    cls[0, 3, 3] = 0.0
    mask_logits = torch.zeros(1, 4, 2, 2)
    mask_logits[0, 2] = -math.log(3)  # p = 0.25 (wrong stuff kernel)
    mask_logits[0, 3] = math.log(3)  # p = 0.75
    targets = [
        {
            "labels": torch.tensor([0]),
            "masks": torch.ones(1, 2, 2),
            "stuff_labels": torch.tensor([3]),  # class 3 present -> kernel 3 positive
            "stuff_masks": torch.ones(1, 2, 2),
        }
    ]
    matches = [(torch.tensor([1]), torch.tensor([0]))]
    stage = {"mask_logits": mask_logits, "cls_logits": cls}
    losses = crit.stage_losses(stage, matches, targets)
    # weighted: 4 thing entries (1 pos), (2, 2) neg, (3, 3) pos -> 2 pos, 4 neg; num_pos = 2
    expected_cls = 2 * (2 * POS_AT_HALF + 4 * NEG_AT_HALF) / 2
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, abs=1e-6)
    # positives: kernel 1 (p = .5, BCE ln2 per pixel) and stuff kernel 3 (p = .75, t = 1)
    expected_mask = (4 * LN2 + 4 * math.log(4 / 3)) / 8
    assert losses["loss_mask"].item() == pytest.approx(expected_mask, abs=1e-6)
    assert "loss_rank" in losses

    # stuff class absent: kernel 3's own column becomes a negative, num_pos = 1
    targets[0]["stuff_labels"] = torch.zeros(0, dtype=torch.long)
    targets[0]["stuff_masks"] = torch.zeros(0, 2, 2)
    losses = crit.stage_losses(stage, matches, targets)
    expected_cls = 2 * (POS_AT_HALF + 5 * NEG_AT_HALF) / 1
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, abs=1e-6)
    assert losses["loss_mask"].item() == pytest.approx(LN2, abs=1e-6)


def _seg_setup():
    t, s, np_ = 2, 2, 3
    crit = make(t, s, np_)
    # 1 x 4 image, pixels 0..3
    stuff = torch.tensor([[[0.2, 0.2, 0.0, 0.0]], [[0.0, 0.7, 0.1, 0.0]]])
    things = torch.tensor([[[0.0, 0.0, 0.5, 0.5]], [[0.3, 0.0, 0.0, 1.0]]])
    targets = [
        {
            "labels": torch.tensor([0, 1]),
            "masks": things,
            "stuff_labels": torch.tensor([3, 2]),
            "stuff_masks": stuff,
        }
    ]
    # kernel 2 <- gt 0 (label 0), kernel 0 <- gt 1 (label 1); listed not in kernel
    # order but in gt order, so painting must follow the kernel index itself
    matches = [(torch.tensor([2, 0]), torch.tensor([0, 1]))]
    return crit, targets, matches


def test_rpn_seg_target_overwrite_order():
    crit, targets, matches = _seg_setup()
    like = torch.zeros(1, 3, 1, 4)
    pos = crit._positives(matches, targets, with_stuff=False, like=like)
    seg = crit._seg_target(pos, targets, 1, like)
    # stuff: [3, 3, -, -] then class 2 over pixels 1, 2 -> [3, 2, 2, bg]
    # things by kernel index: kernel 0 (label 1) on {0, 3}, then kernel 2 (label 0) on {2, 3}
    assert seg.tolist() == [[[1, 2, 0, 0]]]


def test_rpn_seg_loss_value():
    crit, targets, matches = _seg_setup()
    g = torch.Generator().manual_seed(0)
    seg_logits = torch.randn(1, 4, 1, 4, generator=g)
    rpn = {"mask_logits": torch.randn(1, 3, 1, 4, generator=g), "seg_logits": seg_logits}
    losses = crit.rpn_losses(rpn, matches, targets)
    target_map = torch.tensor([1, 2, 0, 0])
    onehot = F.one_hot(target_map, 4).T.float()  # (4 classes, 4 pixels)
    expected = focal_ref(seg_logits[0, :, 0], onehot).sum() / 4  # 4 foreground pixels
    assert losses["loss_rpn_seg"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_rpn_seg_loss_background_and_normalisation():
    crit = make(2, 0, 2)
    rpn = {"mask_logits": torch.zeros(1, 2, 2, 2), "seg_logits": torch.zeros(1, 2, 2, 2)}
    mask = torch.tensor([[[0.0, 0.4], [0.0, 0.0]]])
    targets = [{"labels": torch.tensor([1]), "masks": mask}]
    losses = crit.rpn_losses(rpn, [(torch.tensor([0]), torch.tensor([0]))], targets)
    # 1 foreground pixel: 1 positive + 1 negative, 3 background pixels x 2 negatives
    assert losses["loss_rpn_seg"].item() == pytest.approx(POS_AT_HALF + 7 * NEG_AT_HALF, abs=1e-6)
    assert set(losses) == {"loss_rpn_mask", "loss_rpn_dice", "loss_rpn_seg"}
    # no ground truth: every pixel background, normaliser clamped to 1
    losses = crit.rpn_losses(rpn, [(torch.zeros(0, dtype=torch.long),) * 2], [empty_target(2, 2)])
    assert losses["loss_rpn_seg"].item() == pytest.approx(8 * NEG_AT_HALF, abs=1e-6)
    assert losses["loss_rpn_mask"].item() == 0.0 and losses["loss_rpn_dice"].item() == 0.0


def test_rpn_seg_ce_loss_value_and_off_by_default():
    crit, targets, matches = _seg_setup()
    g = torch.Generator().manual_seed(1)
    seg_logits = torch.randn(1, 4, 1, 4, generator=g)
    rpn = {"mask_logits": torch.randn(1, 3, 1, 4, generator=g), "seg_logits": seg_logits}
    assert "loss_rpn_seg_ce" not in crit.rpn_losses(rpn, matches, targets)
    crit.seg_ce_weight = 0.5
    losses = crit.rpn_losses(rpn, matches, targets)
    # target [1, 2, 0, 0] (test above): -log softmax of the labelled class, mean over 4 pixels
    logp = seg_logits[0, :, 0].log_softmax(0)  # (4 classes, 4 pixels)
    expected = -(logp[1, 0] + logp[2, 1] + logp[0, 2] + logp[0, 3]) / 4 * 0.5
    assert losses["loss_rpn_seg_ce"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_rpn_seg_ce_ignores_background_pixels():
    crit = make(2, 0, 2)
    crit.seg_ce_weight = 1.0
    seg_logits = torch.tensor([[[[3.0, -1.0], [5.0, 0.0]], [[0.0, 2.0], [-5.0, 1.0]]]])
    rpn = {"mask_logits": torch.zeros(1, 2, 2, 2), "seg_logits": seg_logits}
    mask = torch.tensor([[[0.0, 0.4], [0.0, 0.0]]])  # one thing pixel, class 1
    targets = [{"labels": torch.tensor([1]), "masks": mask}]
    losses = crit.rpn_losses(rpn, [(torch.tensor([0]), torch.tensor([0]))], targets)
    # only pixel (0, 1) counts: logits (-1, 2) for classes (0, 1)
    expected = -torch.tensor([-1.0, 2.0]).log_softmax(0)[1]
    assert losses["loss_rpn_seg_ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    # no labelled pixel: zero, not NaN
    losses = crit.rpn_losses(rpn, [(torch.zeros(0, dtype=torch.long),) * 2], [empty_target(2, 2)])
    assert losses["loss_rpn_seg_ce"].item() == 0.0


def _rank_expected(mask_logits, target, weight=0.1):
    """-log softmax over kernels at the labelled pixels, summed, / all pixels."""
    x = mask_logits[0].reshape(mask_logits.shape[1], -1)
    total = 0.0
    for px, k in enumerate(target):
        if k != 255:
            col = x[:, px]
            total += -(col[k] - torch.logsumexp(col, 0)).item()
    return weight * total / len(target)


def test_rank_loss_targets_stage_and_rpn():
    t, s, np_ = 1, 1, 2
    crit = make(t, s, np_)
    g = torch.Generator().manual_seed(1)
    mask_logits = torch.randn(1, 3, 2, 2, generator=g) * 2
    gt_a = torch.tensor([[[0.9, 0.1], [0.0, 0.0]]])  # pixels 0, 1
    gt_b = torch.tensor([[[0.0, 0.6], [0.2, 0.0]]])  # pixels 1, 2
    targets = [
        {
            "labels": torch.tensor([0, 0]),
            "masks": torch.cat([gt_a, gt_b]),
            "stuff_labels": torch.tensor([1]),  # -> kernel 2
            "stuff_masks": torch.tensor([[[0.0, 0.0], [0.3, 0.0]]]),  # pixel 2
        }
    ]
    matches = [(torch.tensor([1, 0]), torch.tensor([0, 1]))]  # kernel 1 <- a, kernel 0 <- b
    stage = {"mask_logits": mask_logits, "cls_logits": torch.zeros(1, 3, 2)}
    losses = crit.stage_losses(stage, matches, targets)
    # ascending kernel order: k0 on {1, 2}, k1 on {0, 1}, stuff k2 on {2}
    assert losses["loss_rank"].item() == pytest.approx(
        _rank_expected(mask_logits, [1, 1, 2, 255]), rel=1e-5
    )
    rpn = {"mask_logits": mask_logits[:, :2], "seg_logits": torch.zeros(1, 2, 2, 2)}
    losses = crit.rpn_losses(rpn, matches, targets)
    assert losses["loss_rpn_rank"].item() == pytest.approx(
        _rank_expected(mask_logits[:, :2], [1, 1, 0, 255]), rel=1e-5
    )


def _halves(h=4, w=4):
    left = torch.zeros(h, w)
    left[:, : w // 2] = 1
    return left, 1 - left


def test_matching_uses_previous_stage_predictions():
    crit = make(2, 0, 2)
    left, right = _halves()
    big = 10.0
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.stack([left, right])}]
    rpn = {
        "mask_logits": (torch.stack([left, right]) * 2 - 1)[None] * big,  # k0 left, k1 right
        "seg_logits": torch.zeros(1, 2, 4, 4),
    }
    stage0 = {  # own masks swapped: k0 right, k1 left
        "mask_logits": (torch.stack([right, left]) * 2 - 1)[None] * big,
        "cls_logits": torch.zeros(1, 2, 2),
    }
    stage1 = {  # identical masks; classes say k0 -> label 1, k1 -> label 0
        "mask_logits": torch.zeros(1, 2, 4, 4),
        "cls_logits": torch.tensor([[[-big, big], [big, -big]]]),
    }
    stage2 = {"mask_logits": torch.zeros(1, 2, 4, 4), "cls_logits": torch.zeros(1, 2, 2)}
    stages = [stage0, stage1, stage2]
    matches = crit.match_stages(rpn, stages, targets)
    as_dict = [dict(zip(p.tolist(), t.tolist())) for (p, t), in matches]
    assert as_dict[0] == {0: 0, 1: 1}  # rpn losses: rpn masks
    assert as_dict[1] == {0: 0, 1: 1}  # update stage 0: rpn masks, not its own (swapped)
    assert as_dict[2] == {0: 1, 1: 0}  # update stage 1: update stage 0's masks
    assert as_dict[3] == {0: 1, 1: 0}  # update stage 2: stage 1's class scores decide
    # without the class cost the tie would be broken differently
    (p, t), = crit.matcher(stage1["mask_logits"], None, targets)
    assert dict(zip(p.tolist(), t.tolist())) == {0: 0, 1: 1}

    losses = crit(rpn, stages, targets)
    with_rpn = crit.stage_losses(stage0, matches[0], targets)
    with_own = crit.stage_losses(stage0, matches[2], targets)
    assert losses["s0_loss_mask"].item() == pytest.approx(with_rpn["loss_mask"].item())
    assert losses["s0_loss_mask"].item() > with_own["loss_mask"].item() + 1.0
    assert {f"s{i}_loss_{k}" for i in range(3) for k in ("cls", "mask", "dice")} | {
        "loss_rpn_mask",
        "loss_rpn_dice",
        "loss_rpn_seg",
    } == set(losses)


def _random_inputs(b, t, s, np_, h, w, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    n = np_ + s

    def r(*shape):
        return torch.randn(*shape, generator=g).requires_grad_(requires_grad)

    rpn = {"mask_logits": r(b, np_, h, w), "seg_logits": r(b, t + s, h, w)}
    stages = [{"mask_logits": r(b, n, h, w), "cls_logits": r(b, n, t + s)} for _ in range(3)]
    return rpn, stages


@pytest.mark.parametrize("panoptic", [False, True])
def test_images_without_ground_truth(panoptic):
    t, s, np_, h, w = 3, (2 if panoptic else 0), 4, 6, 5
    crit = make(t, s, np_)
    rpn, stages = _random_inputs(3, t, s, np_, h, w)
    targets = [empty_target(h, w, panoptic) for _ in range(3)]
    losses = crit(rpn, stages, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    for k, v in losses.items():
        assert v.requires_grad, k
        if any(x in k for x in ("mask", "dice", "rank")):
            assert v.item() == 0.0, k
    total.backward()
    for tensor in [rpn["mask_logits"], stages[2]["mask_logits"], stages[0]["cls_logits"]]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert stages[2]["mask_logits"].grad.abs().sum() == 0  # graph-connected zeros
    assert stages[0]["cls_logits"].grad.abs().sum() > 0  # every kernel is a negative
    if panoptic:
        assert {"loss_rpn_rank", "s0_loss_rank", "s2_loss_rank"} <= set(losses)
    else:
        assert not any("rank" in k for k in losses)


def test_mixed_batch_more_targets_than_kernels():
    t, s, np_, h, w = 2, 1, 2, 4, 4
    crit = make(t, s, np_)
    rpn, stages = _random_inputs(2, t, s, np_, h, w, seed=3)
    g = torch.Generator().manual_seed(5)
    targets = [
        {
            "labels": torch.tensor([0, 1, 1]),
            "masks": torch.rand(3, h, w, generator=g),
            "stuff_labels": torch.tensor([2]),
            "stuff_masks": torch.rand(1, h, w, generator=g),
        },
        empty_target(h, w, panoptic=True),
    ]
    matches = crit.match_stages(rpn, stages, targets)
    assert all(len(m[0][0]) == 2 and len(m[1][0]) == 0 for m in matches)
    losses = crit(rpn, stages, targets, matches=matches)
    assert all(torch.isfinite(v) for v in losses.values())
    # cls normaliser: 2 matched things + 1 present stuff = 3
    cls = stages[1]["cls_logits"]
    onehot = torch.zeros(2, 3, 3)
    for p, tt in zip(*matches[2][0]):
        onehot[0, p, targets[0]["labels"][tt]] = 1
    onehot[0, 2, 2] = 1
    weights = torch.zeros(3, 3)
    weights[:2, :2] = 1
    weights[2, 2] = 1
    expected = (focal_ref(cls, onehot) * weights).sum() / 3 * 2
    assert losses["s1_loss_cls"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_batch_of_identical_images_gives_same_losses(batch):
    t, s, np_, h, w = 2, 2, 3, 5, 4
    crit = make(t, s, np_)
    rpn1, stages1 = _random_inputs(1, t, s, np_, h, w, seed=7, requires_grad=False)
    g = torch.Generator().manual_seed(8)
    target = {
        "labels": torch.tensor([1, 0]),
        "masks": torch.rand(2, h, w, generator=g),
        "stuff_labels": torch.tensor([3]),
        "stuff_masks": torch.rand(1, h, w, generator=g),
    }

    def rep(d):
        return {k: v.expand(batch, *v.shape[1:]) for k, v in d.items()}

    single = crit(rpn1, stages1, [target])
    batched = crit(rep(rpn1), [rep(x) for x in stages1], [target] * batch)
    assert set(single) == set(batched)
    for k in single:
        assert batched[k].item() == pytest.approx(single[k].item(), rel=1e-5), k


def test_distinct_images_pool_positives_over_the_batch():
    crit = make(2, 0, 2)
    logits = torch.zeros(2, 2, 1, 2)
    logits[1, 1] = math.log(3)  # image 1, kernel 1: p = 0.75
    targets = [
        {"labels": torch.tensor([0]), "masks": torch.ones(1, 1, 2)},
        {"labels": torch.tensor([1]), "masks": torch.ones(1, 1, 2)},
    ]
    matches = [(torch.tensor([0]), torch.tensor([0])), (torch.tensor([1]), torch.tensor([0]))]
    stage = {"mask_logits": logits, "cls_logits": torch.zeros(2, 2, 2)}
    losses = crit.stage_losses(stage, matches, targets)
    # BCE mean over both positives' pixels: 2 x ln2 and 2 x ln(4/3)
    assert losses["loss_mask"].item() == pytest.approx(
        (2 * LN2 + 2 * math.log(4 / 3)) / 4, abs=1e-6
    )
    # 2 images x 2 kernels x 2 classes = 8 entries, 2 positives, num_pos = 2
    assert losses["loss_cls"].item() == pytest.approx(
        2 * (2 * POS_AT_HALF + 6 * NEG_AT_HALF) / 2, abs=1e-6
    )


def test_num_pos_is_averaged_across_ranks(monkeypatch):
    crit = make(2, 0, 2)
    calls = []

    def fake_all_reduce(tensor):
        calls.append(tensor.item())
        tensor.add_(5.0)  # the other rank had 5 positives

    monkeypatch.setattr(criterion_module.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(criterion_module.dist, "all_reduce", fake_all_reduce)
    stage = {"mask_logits": torch.zeros(1, 2, 1, 2), "cls_logits": torch.zeros(1, 2, 2)}
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 1, 2)}]
    losses = crit.stage_losses(stage, [(torch.tensor([0]), torch.tensor([0]))], targets)
    assert calls == [1.0]
    avg = (1 + 5) / 2
    assert losses["loss_cls"].item() == pytest.approx(
        2 * (POS_AT_HALF + 3 * NEG_AT_HALF) / avg, abs=1e-6
    )


def test_criterion_from_config():
    cfg = get_cfg()
    add_knet_config(cfg)
    cfg.MODEL.KNET.NUM_STUFF_CLASSES = 0
    cfg.MODEL.KNET.RANK_WEIGHT = 0.3
    cfg.MODEL.KNET.MATCHER.COST_MASK = 5.0
    crit = KNetCriterion(cfg)
    assert not crit.panoptic and crit.num_classes == 80 and crit.num_proposals == 100
    assert (crit.class_weight, crit.dice_weight, crit.rank_weight) == (2.0, 4.0, 0.3)
    assert crit.seg_ce_weight == 0.0
    cfg.MODEL.KNET.SEG_CE_WEIGHT = 0.7
    assert KNetCriterion(cfg).seg_ce_weight == 0.7
    assert crit.matcher.cost_mask == 5.0
    cfg.MODEL.KNET.NUM_STUFF_CLASSES = 53
    assert KNetCriterion(cfg).panoptic


def test_one_to_many_early_stages_last_stage_one_to_one():
    b, t, s, np_, h, w = 2, 3, 2, 8, 8, 8
    rpn, stages = _random_inputs(b, t, s, np_, h, w, seed=5, requires_grad=False)
    g = torch.Generator().manual_seed(6)
    targets = [
        {
            "labels": torch.tensor([0, 2]),
            "masks": (torch.rand(2, h, w, generator=g) > 0.5).float(),
            "stuff_labels": torch.tensor([3]),
            "stuff_masks": (torch.rand(1, h, w, generator=g) > 0.5).float(),
        }
        for _ in range(b)
    ]
    kwargs = dict(num_thing_classes=t, num_stuff_classes=s, num_proposals=np_)
    one = KNetCriterion(matcher=HungarianMatcher(), **kwargs).match_stages(rpn, stages, targets)
    o2m = HungarianMatcher(one_to_many_copies=3, one_to_many_stages=2, num_stages=3)
    assert o2m.copies_per_stage(3) == [3, 3, 1]
    many = KNetCriterion(matcher=o2m, **kwargs).match_stages(rpn, stages, targets)
    # element 0: stage-0 losses, then update stages 0, 1, 2
    assert [[len(p) for p, _ in m] for m in one] == [[2, 2]] * 4
    assert [[len(p) for p, _ in m] for m in many] == [[6, 6]] * 3 + [[2, 2]]
    assert all(torch.equal(p, q) and torch.equal(x, y)
               for (p, x), (q, y) in zip(one[3], many[3]))  # the last stage is unchanged
    losses = KNetCriterion(matcher=o2m, **kwargs)(rpn, stages, targets)
    assert all(torch.isfinite(v) for v in losses.values())
