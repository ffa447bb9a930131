"""Post-processing: mask rescaling order, instance top-k, panoptic merge, semantic scores."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances
from hypothesis import given, settings
from hypothesis import strategies as st

from knet_d2.modeling.postprocessing import (
    _best_kernel_per_pixel,
    instance_inference,
    masks_to_boxes,
    panoptic_inference,
    rescale_masks,
    semantic_inference,
)


def _logit(p):
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- rescale_masks
def test_rescale_masks_crops_before_resizing_to_output():
    logits = torch.full((1, 4, 4), -10.0)
    logits[0, :, 3] = 10.0  # only the padded columns 12..15 of the 16x16 input
    out = rescale_masks(logits, (16, 16), (16, 12), (8, 6))
    assert out.shape == (1, 8, 6)
    assert out.max() < 0.5  # the mask vanishes
    # resizing straight to the output size (ignoring the padding) would have kept it
    wrong = F.interpolate(logits[None].sigmoid(), size=(8, 6), mode="bilinear")[0]
    assert wrong.max() > 0.5


def test_rescale_masks_keeps_image_content_and_values():
    logits = torch.full((2, 4, 4), -10.0)
    logits[0, :, 0] = 10.0  # inside the image
    logits[1] = 0.3
    out = rescale_masks(logits, (16, 16), (16, 12), (32, 24))
    assert out.shape == (2, 32, 24)
    assert (out[0, :, :3] > 0.99).all() and (out[0, :, 13:] < 0.01).all()
    torch.testing.assert_close(out[1], torch.full((32, 24), torch.sigmoid(torch.tensor(0.3))))


# ---------------------------------------------------------------- instances
def test_masks_to_boxes_matches_bitmasks():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 7, 9, generator=g) > 0.8
    masks[2] = False  # empty mask -> zero box
    masks[3] = False
    masks[3, 4, 5] = True  # single pixel
    ours = masks_to_boxes(masks).tensor
    ref = BitMasks(masks).get_bounding_boxes().tensor
    torch.testing.assert_close(ours, ref)
    assert ours[2].abs().sum() == 0 and ours[3].tolist() == [5.0, 4.0, 6.0, 5.0]
    assert masks_to_boxes(torch.zeros(0, 3, 3, dtype=torch.bool)).tensor.shape == (0, 4)


def test_instance_inference_topk_pairs():
    cls = torch.tensor(
        [
            [-1.0, 0.0, 2.0, 9.0],
            [5.0, 4.0, -5.0, 9.0],  # kernel 1: two top pairs
            [-3.0, -3.0, -3.0, 9.0],
        ]
    )  # column 3 is excluded (num_classes_for_instances = 3)
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(3, 5, 6, generator=g)
    probs[0] = 0.1  # kernel 0's mask is empty after thresholding
    res = instance_inference(cls, probs, 3, max_per_image=3, mask_threshold=0.5)
    assert isinstance(res, Instances) and res.image_size == (5, 6) and len(res) == 3
    assert res.pred_classes.tolist() == [0, 1, 2]
    torch.testing.assert_close(res.scores, torch.sigmoid(torch.tensor([5.0, 4.0, 2.0])))
    assert res.pred_masks.dtype == torch.bool
    assert torch.equal(res.pred_masks[0], probs[1] > 0.5)
    assert torch.equal(res.pred_masks[1], probs[1] > 0.5)
    assert not res.pred_masks[2].any()
    ref = BitMasks(res.pred_masks).get_bounding_boxes().tensor
    torch.testing.assert_close(res.pred_boxes.tensor, ref)
    # k larger than N * K': every pair, sorted by score
    res = instance_inference(cls, probs, 3, max_per_image=100)
    assert len(res) == 9
    assert (res.scores[:-1] >= res.scores[1:]).all()
    assert res.pred_classes.max() < 3


# ---------------------------------------------------------------- panoptic
def _panoptic_case():
    t, s, np_ = 2, 2, 4
    lo, hi = 0.02, 0.95
    probs = torch.full((6, 2, 4), lo)
    probs[0, 0, 0:2] = hi  # k0 thing 0.9
    probs[1, 0, 2] = hi  # k1 thing 0.2 (< 0.3)
    probs[2, 0, 0:2] = hi  # k2 thing 0.8, mostly hidden by k0
    probs[2, 0, 3] = hi
    probs[3, 1, 2] = hi  # k3 thing 0.5
    probs[4, 1, 0:2] = hi  # k4 stuff class 2, score 0.1
    probs[5] = 0.1  # k5 stuff class 3, score 0.6, no pixel >= 0.5
    c = torch.full((6, 4), -20.0)
    c[0, 1] = _logit(0.9)
    c[1, 0] = _logit(0.2)
    c[2, 0] = _logit(0.8)
    c[2, 2] = _logit(0.99)  # stuff column of a thing kernel: ignored
    c[3, 0] = _logit(0.5)
    c[4, 2] = _logit(0.1)
    c[4, 0] = c[4, 3] = _logit(0.99)  # only the diagonal entry counts for stuff
    c[5, 3] = _logit(0.6)
    return c, probs, t, s, np_


def test_panoptic_inference_hand_made():
    c, probs, t, s, np_ = _panoptic_case()
    seg, info = panoptic_inference(c, probs, t, s, np_, 0.3, 0.6, 0.5)
    assert seg.dtype == torch.int32 and seg.shape == (2, 4)
    # k1 (score < 0.3) and k2 (1 of 3 pixels visible) are skipped -> void; k5 has no
    # pixel >= 0.5 -> void where it wins; stuff k4 kept despite its score 0.1
    assert seg.tolist() == [[1, 1, 0, 0], [3, 3, 2, 0]]
    assert [(d["id"], d["category_id"], d["isthing"]) for d in info] == [
        (1, 1, True),
        (2, 0, True),
        (3, 2, False),
    ]
    assert [d["score"] for d in info] == pytest.approx([0.9, 0.5, 0.1], abs=1e-6)


def test_panoptic_inference_thresholds():
    c, probs, t, s, np_ = _panoptic_case()
    seg, info = panoptic_inference(c, probs, t, s, np_, instance_score_thresh=0.1)
    assert seg[0, 2] > 0  # k1 now kept
    assert [d["score"] for d in info] == pytest.approx([0.9, 0.5, 0.2, 0.1], abs=1e-6)
    seg, info = panoptic_inference(c, probs, t, s, np_, overlap_thresh=0.3)
    assert seg[0, 3] > 0 and seg[0, 0] == 1  # k2 kept, only on its visible pixel
    assert [d["score"] for d in info] == pytest.approx([0.9, 0.8, 0.5, 0.1], abs=1e-6)
    seg, info = panoptic_inference(c, probs, t, s, np_, instance_score_thresh=0.95)
    assert [d["category_id"] for d in info] == [2] and seg.tolist() == [[0] * 4, [1, 1, 0, 0]]


def _reference_merge(cls_logits, mask_probs, t, s, np_, score_thr, overlap_thr, mask_thr):
    """The official sequential loop, returned in D2's (map, segments_info) form."""
    probs = cls_logits.sigmoid()
    thing_scores, thing_labels = probs[:np_, :t].max(1)
    stuff_scores = torch.stack([probs[np_ + j, t + j] for j in range(s)]) if s else probs[:0, 0]
    scores = torch.cat([thing_scores, stuff_scores])
    labels = torch.cat([thing_labels, torch.arange(s) + t])
    ids = (scores[:, None, None] * mask_probs).argmax(0)
    out = torch.zeros(ids.shape, dtype=torch.int32)
    info = []
    for k in torch.argsort(-scores, stable=True).tolist():
        isthing = k < np_
        if isthing and scores[k] < score_thr:
            continue
        area = int((ids == k).sum())
        orig = int((mask_probs[k] >= mask_thr).sum())
        if area > 0 and orig > 0:
            if area / orig < overlap_thr:
                continue
            out[ids == k] = len(info) + 1
            info.append((len(info) + 1, int(labels[k]), isthing))
    return out, info


@settings(max_examples=60, deadline=None)
@given(
    np_=st.integers(1, 4),
    t=st.integers(1, 3),
    s=st.integers(0, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    score_thr=st.sampled_from([0.0, 0.3, 0.7]),
    overlap_thr=st.sampled_from([0.0, 0.6, 0.9]),
)
def test_panoptic_inference_properties(np_, t, s, h, w, seed, score_thr, overlap_thr):
    g = torch.Generator().manual_seed(seed)
    n = np_ + s
    cls = torch.randn(n, t + s, generator=g) * 3
    probs = torch.rand(n, h, w, generator=g) ** 2
    seg, info = panoptic_inference(cls, probs, t, s, np_, score_thr, overlap_thr, 0.5)
    assert seg.shape == (h, w) and seg.dtype == torch.int32
    ids = [d["id"] for d in info]
    assert ids == list(range(1, len(info) + 1))
    present = set(seg.unique().tolist()) - {0}
    assert present == set(ids)  # no empty segment, every non-void pixel is listed
    assert set(seg.unique().tolist()) <= {0, *ids}
    scores = [d["score"] for d in info]
    assert scores == sorted(scores, reverse=True)
    stuff_cats = [d["category_id"] for d in info if not d["isthing"]]
    assert len(stuff_cats) == len(set(stuff_cats))
    for d in info:
        assert 0 <= d["category_id"] < t + s
        assert d["isthing"] == (d["category_id"] < t)
        if d["isthing"]:
            assert d["score"] >= score_thr
    ref_map, ref_info = _reference_merge(cls, probs, t, s, np_, score_thr, overlap_thr, 0.5)
    assert torch.equal(seg, ref_map)
    assert [(d["id"], d["category_id"], d["isthing"]) for d in info] == ref_info


# ---------------------------------------------------------------- semantic
def test_semantic_inference_hand_value():
    cls = torch.tensor([[0.0, math.log(3)], [math.log(3), 0.0]])  # probs [[.5,.75],[.75,.5]]
    masks = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    out = semantic_inference(cls, masks)
    assert out.shape == (2, 1, 2)
    torch.testing.assert_close(out, torch.tensor([[[0.875, 0.375]], [[1.0, 0.25]]]))


def test_panoptic_overlap_ratio_boundary_is_kept():
    probs = torch.full((2, 1, 5), 0.01)
    probs[0] = 0.9  # k0: 5 pixels
    probs[1, 0, :2] = 0.95  # k1 (higher score) takes 2 of them -> k0 keeps 3 / 5 = 0.6
    cls = torch.tensor([[_logit(0.9)], [_logit(0.95)]])
    seg, info = panoptic_inference(cls, probs, 1, 0, 2, overlap_thresh=0.6)
    assert seg.tolist() == [[1, 1, 2, 2, 2]] and len(info) == 2
    seg, info = panoptic_inference(cls, probs, 1, 0, 2, overlap_thresh=0.61)
    assert seg.tolist() == [[1, 1, 0, 0, 0]] and len(info) == 1


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
def test_best_kernel_per_pixel_equals_the_one_shot_product(chunk_size):
    """The chunked merge step gives the ids and counts of the (N, H, W) expressions exactly,
    ties included (quantised probabilities and equal scores make many)."""
    g = torch.Generator().manual_seed(3)
    n, h, w = 9, 13, 11
    probs = (torch.rand(n, h, w, generator=g) * 4).round() / 4  # values 0, .25, .5, .75, 1
    scores = torch.tensor([0.9, 0.9, 0.5, 0.3, 0.9, 0.1, 0.5, 0.7, 0.7])
    ids, orig = _best_kernel_per_pixel(scores, probs, 0.5, chunk_size)
    assert torch.equal(ids, (scores[:, None, None] * probs).argmax(dim=0))
    assert torch.equal(orig, (probs >= 0.5).flatten(1).sum(dim=1))
    assert ids.shape == (h, w) and ids.dtype == orig.dtype == torch.int64
