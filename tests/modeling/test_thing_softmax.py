"""knet_d2.modeling.thing_softmax and MODEL.KNET.THING_SOFTMAX: probabilities with an implicit
"no object" class, their sigmoid logits, the weighted cross-entropy, and how the criterion and
the matcher use them."""
import math

import pytest
import torch
import torch.nn.functional as F

from knet_d2.modeling.criterion import KNetCriterion
from knet_d2.modeling.matcher import HungarianMatcher, batched_match_costs
from knet_d2.modeling.thing_softmax import (
    as_sigmoid_logits,
    thing_probabilities,
    thing_softmax_loss,
)

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def test_probabilities_leave_room_for_no_object():
    logits = torch.tensor([[0.0, 0.0], [math.log(2.0), -1e4]])
    probs = thing_probabilities(logits)
    # row 0: e^0 / (1 + 1 + 1) each; row 1: 2 / (2 + 0 + 1) and ~0
    torch.testing.assert_close(probs, torch.tensor([[1 / 3, 1 / 3], [2 / 3, 0.0]]))
    many = thing_probabilities(torch.randn(5, 7, 4) * 3)
    assert bool((many.sum(-1) < 1).all()) and bool((many > 0).all())


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_sigmoid_of_the_converted_logits_is_the_softmax_probability(scale):
    logits = torch.randn(3, 6, 5) * scale
    z = as_sigmoid_logits(logits)
    assert z.shape == logits.shape and bool(torch.isfinite(z).all())
    torch.testing.assert_close(z.sigmoid(), thing_probabilities(logits), atol=1e-6, rtol=1e-5)
    # one class: sigmoid(l) is exactly softmax over (l, 0)
    one = torch.randn(4, 1)
    torch.testing.assert_close(as_sigmoid_logits(one), one)


def test_loss_is_the_weighted_mean_cross_entropy():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])  # (1, 3 kernels, 2 classes)
    labels = torch.tensor([[0, 2, 2]])  # kernel 0 is class 0, the others "no object"
    w = 0.1

    def ce(row, target):
        full = torch.cat([row, torch.zeros(1)])
        return -(full.softmax(0)[target]).log()

    expected = (ce(logits[0, 0], 0) + w * ce(logits[0, 1], 2) + w * ce(logits[0, 2], 2)) / (
        1 + 2 * w
    )
    loss = thing_softmax_loss(logits, labels, w)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def _stage(b, n, k, h=4, w=4):
    return {"mask_logits": torch.randn(b, n, h, w), "cls_logits": torch.randn(b, n, k)}


def test_criterion_instance_class_loss_is_the_cross_entropy_alone():
    crit = KNetCriterion(
        matcher=HungarianMatcher(), num_thing_classes=3, num_stuff_classes=0, num_proposals=4,
        thing_softmax=True, no_object_weight=0.2,
    )
    stage = _stage(2, 4, 3)
    targets = [
        {"labels": torch.tensor([2, 0]), "masks": torch.rand(2, 4, 4)},
        {"labels": torch.tensor([1]), "masks": torch.rand(1, 4, 4)},
    ]
    matches = [(torch.tensor([3, 1]), torch.tensor([0, 1])), (torch.tensor([0]), torch.tensor([0]))]
    loss = crit.stage_losses(stage, matches, targets)["loss_cls"]
    labels = torch.full((2, 4), 3)
    labels[0, 3], labels[0, 1], labels[1, 0] = 2, 0, 1
    weight = torch.tensor([1.0, 1.0, 1.0, 0.2])
    full = torch.cat([stage["cls_logits"], torch.zeros(2, 4, 1)], -1)
    expected = F.cross_entropy(full.flatten(0, 1), labels.flatten(), weight=weight) * 2.0
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_criterion_panoptic_keeps_the_stuff_focal_loss():
    """Stuff kernels keep their focal term: the softmax model's loss minus the cross-entropy
    is the focal loss of the stuff columns alone."""
    t, s, np_ = 2, 2, 3
    kw = {"matcher": HungarianMatcher(), "num_thing_classes": t, "num_stuff_classes": s,
          "num_proposals": np_}
    soft = KNetCriterion(thing_softmax=True, no_object_weight=0.1, **kw)
    stage = _stage(1, np_ + s, t + s)
    targets = [{"labels": torch.tensor([1]), "masks": torch.rand(1, 4, 4),
                "stuff_labels": torch.tensor([t + 1]), "stuff_masks": torch.rand(1, 4, 4)}]
    matches = [(torch.tensor([2]), torch.tensor([0]))]
    loss = soft.stage_losses(stage, matches, targets)["loss_cls"]
    labels = torch.tensor([[t, t, 1]])
    ce = thing_softmax_loss(stage["cls_logits"][:, :np_, :t], labels, 0.1)
    p = stage["cls_logits"][0, np_:].sigmoid()  # (S, T+S): stuff kernel j on column t + j
    q = torch.stack([p[0, t], p[1, t + 1]])
    y = torch.tensor([0.0, 1.0])  # stuff class t + 1 present
    focal = -(0.25 * y * (1 - q) ** 2 * q.log() + 0.75 * (1 - y) * q**2 * (1 - q).log())
    expected = 2.0 * (ce + focal.sum() / 2)  # positives: the thing and the present stuff
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_matcher_class_cost_is_minus_the_probability():
    mask_logits = torch.zeros(1, 2, 2, 2)
    cls_logits = torch.tensor([[[3.0, -2.0], [0.0, 1.0]]])
    tgt = torch.ones(1, 1, 2, 2)
    labels = torch.tensor([[1]])
    w = {"cost_class": 2.0, "cost_mask": 0.0, "cost_dice": 0.0}
    cost = batched_match_costs(mask_logits, cls_logits, tgt, labels, thing_softmax=True, **w)
    probs = thing_probabilities(cls_logits)[0, :, 1]
    torch.testing.assert_close(cost[0, :, 0], -2.0 * probs)
    focal = batched_match_costs(mask_logits, cls_logits, tgt, labels, **w)
    assert not torch.allclose(focal, cost)
    # the lower cost goes to the kernel that gives class 1 the higher softmax probability
    assert HungarianMatcher(cost_mask=0.0, cost_dice=0.0, thing_softmax=True)(
        mask_logits, cls_logits, [{"labels": labels[0], "masks": tgt[0]}]
    )[0][0].tolist() == [1]


def test_criterion_refuses_a_no_object_weight_of_zero_and_trains_a_batch_without_things():
    kw = {"matcher": HungarianMatcher(), "num_thing_classes": 2, "num_stuff_classes": 0,
          "num_proposals": 3, "thing_softmax": True}
    with pytest.raises(ValueError, match="MODEL.KNET.NO_OBJECT_WEIGHT"):
        KNetCriterion(no_object_weight=0.0, **kw)
    crit = KNetCriterion(no_object_weight=0.1, **kw)
    stage = _stage(1, 3, 2)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 4, 4)}]
    matches = [(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))]
    loss = crit.stage_losses(stage, matches, empty)["loss_cls"]
    expected = 2.0 * thing_softmax_loss(stage["cls_logits"], torch.full((1, 3), 2), 0.1)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), abs=1e-6)
