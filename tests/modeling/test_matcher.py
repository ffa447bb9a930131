"""HungarianMatcher: hand-computed costs, optimality vs brute force, edge cases."""
import itertools
import math

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

from knet_d2 import add_knet_config
from knet_d2.modeling.matcher import (
    HungarianMatcher,
    batched_match_costs,
    one_to_many_assignment,
)


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float32)
    return torch.log(p / (1 - p))


# 2x2 example: one prediction, one target.
P = [[0.8, 0.2], [0.6, 0.4]]
T = [[1.0, 0.0], [1.0, 0.0]]


def _costs(**weights):
    mask_logits = _logit(P)[None, None]  # (1, 1, 2, 2)
    cls_logits = torch.zeros(1, 1, 3)  # p = 0.5 for every class
    tgt = torch.tensor(T)[None, None]
    labels = torch.tensor([[2]])
    w = {"cost_class": 0.0, "cost_mask": 0.0, "cost_dice": 0.0}
    w.update(weights)
    return batched_match_costs(mask_logits, cls_logits, tgt, labels, **w)[0, 0, 0].item()


def test_mask_cost_hand_value():
    # sum(p t) = 0.8 + 0.6, sum((1-p)(1-t)) = 0.8 + 0.6, H*W = 4
    assert _costs(cost_mask=1.0) == pytest.approx(-(1.4 + 1.4) / 4, abs=1e-6)
    assert _costs(cost_mask=3.0) == pytest.approx(-3 * 0.7, abs=1e-6)


def test_dice_cost_hand_value():
    # sum p^2 = 0.64 + 0.04 + 0.36 + 0.16 = 1.2, sum t^2 = 2, eps = 1e-3 on both
    expected = -2 * 1.4 / (1.2 + 1e-3 + 2.0 + 1e-3)
    assert _costs(cost_dice=1.0) == pytest.approx(expected, abs=1e-6)


def test_focal_cost_hand_value():
    # q = 0.5: pos = -0.25 * 0.5^2 * log(0.5), neg = -0.75 * 0.5^2 * log(0.5)
    pos = -0.25 * 0.25 * math.log(0.5)
    neg = -0.75 * 0.25 * math.log(0.5)
    assert _costs(cost_class=1.0) == pytest.approx(pos - neg, abs=1e-6)
    assert _costs(cost_class=2.0, cost_mask=1.0, cost_dice=4.0) == pytest.approx(
        2 * (pos - neg) - 0.7 + 4 * (-2 * 1.4 / 3.202), abs=1e-5
    )


def test_focal_cost_uses_gt_class_column():
    mask_logits = torch.zeros(1, 2, 2, 2)
    cls_logits = torch.tensor([[[3.0, -3.0], [-3.0, 3.0]]])  # kernel 0 -> class 0, 1 -> 1
    tgt = torch.rand(1, 2, 2, 2)
    labels = torch.tensor([[1, 0]])
    c = batched_match_costs(mask_logits, cls_logits, tgt, labels, 1.0, 0.0, 0.0)[0]
    # kernel 1 is confident about class 1 = label of target 0 -> lowest cost
    assert c[1, 0] < c[0, 0] and c[0, 1] < c[1, 1]
    assert c[1, 0] == pytest.approx(c[0, 1].item(), abs=1e-6)


def _naive_cost(mask_logits, cls_logits, masks, labels, wc=2.0, wm=1.0, wd=4.0):
    """Per-pair loop of the reference formulas (one image)."""
    n, m = mask_logits.shape[0], masks.shape[0]
    cost = torch.zeros(n, m)
    for i in range(n):
        p = mask_logits[i].sigmoid().flatten()
        for j in range(m):
            t = masks[j].flatten()
            c = -((p * t).sum() + ((1 - p) * (1 - t)).sum()) / p.numel() * wm
            c += -2 * (p * t).sum() / ((p * p).sum() + 1e-3 + (t * t).sum() + 1e-3) * wd
            if cls_logits is not None:
                q = cls_logits[i, labels[j]].sigmoid()
                pos = -0.25 * (1 - q) ** 2 * torch.log(q + 1e-12)
                neg = -0.75 * q**2 * torch.log(1 - q + 1e-12)
                c += (pos - neg) * wc
            cost[i, j] = c
    return cost


@pytest.mark.parametrize("seed", range(12))
def test_matcher_optimal_vs_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 5, (1,), generator=g))
    m = int(torch.randint(1, 5, (1,), generator=g))
    k = 3
    mask_logits = torch.randn(1, n, 3, 4, generator=g) * 2
    cls_logits = torch.randn(1, n, k, generator=g) * 2 if seed % 2 else None
    masks = torch.rand(m, 3, 4, generator=g)
    labels = torch.randint(0, k, (m,), generator=g)
    cost = _naive_cost(mask_logits[0], None if cls_logits is None else cls_logits[0], masks, labels)
    batched = batched_match_costs(
        mask_logits, cls_logits, masks[None], labels[None], 2.0, 1.0, 4.0
    )[0]
    torch.testing.assert_close(batched, cost, atol=1e-5, rtol=1e-5)

    (pred_idx, tgt_idx), = HungarianMatcher()(
        mask_logits, cls_logits, [{"labels": labels, "masks": masks}]
    )
    assert pred_idx.dtype == torch.long and tgt_idx.dtype == torch.long
    assert len(pred_idx) == min(n, m)
    assert len(set(pred_idx.tolist())) == len(pred_idx) == len(set(tgt_idx.tolist()))
    got = cost[pred_idx, tgt_idx].sum().item()
    if n >= m:
        best = min(
            sum(cost[perm[j], j].item() for j in range(m))
            for perm in itertools.permutations(range(n), m)
        )
    else:
        best = min(
            sum(cost[i, perm[i]].item() for i in range(n))
            for perm in itertools.permutations(range(m), n)
        )
    assert got == pytest.approx(best, abs=1e-5)


def test_matcher_batch_equals_single_images():
    g = torch.Generator().manual_seed(3)
    n, h, w = 4, 5, 6
    sizes = [2, 0, 4]
    mask_logits = torch.randn(3, n, h, w, generator=g)
    cls_logits = torch.randn(3, n, 5, generator=g)
    targets = [
        {
            "labels": torch.randint(0, 5, (s,), generator=g),
            "masks": torch.rand(s, h, w, generator=g),
        }
        for s in sizes
    ]
    matcher = HungarianMatcher()
    batched = matcher(mask_logits, cls_logits, targets)
    assert len(batched) == 3
    for b in range(3):
        single = matcher(mask_logits[b : b + 1], cls_logits[b : b + 1], [targets[b]])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
        assert len(batched[b][0]) == min(n, sizes[b])


def test_matcher_picks_obvious_assignment_and_skips_class_when_none():
    # masks: kernel 0 = right half, kernel 1 = left half; target 0 = left, target 1 = right
    left = torch.zeros(4, 4)
    left[:, :2] = 1
    right = 1 - left
    mask_logits = torch.stack([right, left])[None] * 20 - 10
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.stack([left, right])}]
    matcher = HungarianMatcher()
    (p, t), = matcher(mask_logits, None, targets)
    assert dict(zip(p.tolist(), t.tolist())) == {0: 1, 1: 0}
    # a huge class weight with classes that disagree with the masks flips the assignment
    cls_logits = torch.tensor([[[10.0, -10.0], [-10.0, 10.0]]])
    strong = HungarianMatcher(cost_class=100.0, cost_mask=1.0, cost_dice=4.0)
    (p, t), = strong(mask_logits, cls_logits, targets)
    assert dict(zip(p.tolist(), t.tolist())) == {0: 0, 1: 1}
    (p, t), = strong(mask_logits, None, targets)  # no cls logits -> class cost skipped
    assert dict(zip(p.tolist(), t.tolist())) == {0: 1, 1: 0}


def test_matcher_more_targets_than_predictions_and_empty():
    g = torch.Generator().manual_seed(0)
    mask_logits = torch.randn(2, 2, 4, 4, generator=g, requires_grad=True)
    targets = [
        {"labels": torch.tensor([0, 1, 2, 0]), "masks": torch.rand(4, 4, 4, generator=g)},
        {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 4, 4)},
    ]
    out = HungarianMatcher()(mask_logits, torch.randn(2, 2, 3), targets)
    (p0, t0), (p1, t1) = out
    assert sorted(p0.tolist()) == [0, 1] and len(set(t0.tolist())) == 2
    assert p1.numel() == 0 and t1.numel() == 0 and p1.dtype == torch.long
    assert not p0.requires_grad


def test_matcher_all_images_empty():
    out = HungarianMatcher()(
        torch.randn(2, 3, 4, 4),
        None,
        [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 4, 4)}] * 2,
    )
    assert [(p.numel(), t.numel()) for p, t in out] == [(0, 0), (0, 0)]


def test_matcher_from_config():
    cfg = get_cfg()
    add_knet_config(cfg)
    cfg.MODEL.KNET.MATCHER.COST_DICE = 7.0
    cfg.MODEL.KNET.FOCAL_ALPHA = 0.5
    m = HungarianMatcher(cfg)
    assert (m.cost_class, m.cost_mask, m.cost_dice) == (2.0, 1.0, 7.0)
    assert (m.focal_alpha, m.focal_gamma) == (0.5, 2.0)


def test_one_to_many_refuses_the_last_stage():
    with pytest.raises(ValueError, match=r"STAGES \(3\) must be below MODEL.KNET.NUM_STAGES"):
        HungarianMatcher(one_to_many_copies=2, one_to_many_stages=3, num_stages=3)
    with pytest.raises(ValueError, match="ONE_TO_MANY_COPIES must be >= 1"):
        HungarianMatcher(one_to_many_copies=0)
    cfg = get_cfg()
    add_knet_config(cfg)
    assert HungarianMatcher(cfg).copies_per_stage(3) == [1, 1, 1]
    cfg.MODEL.KNET.MATCHER.ONE_TO_MANY_COPIES = 2
    cfg.MODEL.KNET.MATCHER.ONE_TO_MANY_STAGES = 1
    assert HungarianMatcher(cfg).copies_per_stage(3) == [2, 1, 1]
    cfg.MODEL.KNET.MATCHER.ONE_TO_MANY_STAGES = 3  # NUM_STAGES is 3: the last must stay 1:1
    with pytest.raises(ValueError, match="must be below"):
        HungarianMatcher(cfg)


def test_one_to_many_assignment_gives_targets_several_predictions():
    # 5 predictions, 2 targets: predictions 0, 1, 4 are best for target 0; 2, 3 for target 1
    cost = np.array([[0.0, 9.0], [1.0, 9.0], [9.0, 0.0], [9.0, 1.0], [2.0, 9.0]])
    rows, cols = one_to_many_assignment(cost, 1)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 0, 2: 1}
    rows, cols = one_to_many_assignment(cost, 2)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 0, 1: 0, 2: 1, 3: 1}
    rows, cols = one_to_many_assignment(cost, 3)  # only 5 predictions for 6 slots
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 0, 1: 0, 2: 1, 3: 1, 4: 0}
    assert rows.dtype == cols.dtype == np.int64


def test_match_many_copies_per_prediction_set():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, 4, 4, generator=g)
    targets = [
        {"labels": torch.tensor([0, 1]), "masks": (torch.rand(2, 4, 4, generator=g) > 0.5).float()},
        {"labels": torch.tensor([1]), "masks": (torch.rand(1, 4, 4, generator=g) > 0.5).float()},
    ]
    matcher = HungarianMatcher()
    one, many = matcher.match_many([(logits, None), (logits, None)], targets, copies=[1, 3])
    assert [len(p) for p, _ in one] == [2, 1]
    assert [len(p) for p, _ in many] == [6, 3]
    for (_, t1), (pm, tm) in zip(one, many):
        assert set(tm.tolist()) == set(t1.tolist())  # every target still matched
        assert len(set(pm.tolist())) == len(pm)  # a prediction takes one target at most
    with pytest.raises(ValueError, match="copies"):
        matcher.match_many([(logits, None)], targets, copies=[0])
