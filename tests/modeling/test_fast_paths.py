"""The optimised paths of K-Net's target preparation, matching and post-processing give
bit-identical results to the straightforward formulas they replace."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, ImageList, Instances

from knet_d2.knet_model import KNet, downsample_masks
from knet_d2.modeling.criterion import KNetCriterion
from knet_d2.modeling.matcher import HungarianMatcher
from knet_d2.modeling.postprocessing import instance_inference, rescale_masks


def reference_rescale(logits, padded, image, output):
    probs = logits[None].float().sigmoid()
    probs = F.interpolate(probs, size=padded, mode="bilinear", align_corners=False)
    probs = probs[:, :, : image[0], : image[1]]
    return F.interpolate(probs, size=output, mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize(
    "mask_hw, padded, image, output",
    [
        ((8, 12), (32, 48), (29, 45), (17, 23)),  # x4 (fused crop), downscale
        ((8, 12), (32, 48), (32, 41), (70, 90)),  # x4, upscale
        ((5, 7), (20, 56), (19, 50), (11, 31)),  # x4 / x8
        ((6, 6), (18, 18), (17, 13), (9, 9)),  # x3: not a power of two -> resize + crop
        ((4, 4), (4, 4), (4, 3), (7, 5)),  # x1
    ],
)
@pytest.mark.parametrize("chunk", [None, 1, 3, 100])
def test_rescale_masks_equals_reference(mask_hw, padded, image, output, chunk):
    """Bit-identical when all masks go through at once (small sizes: ``chunk_size=None``).

    In chunks the last bit may differ: ``F.interpolate`` itself is not batch-invariant on the
    CPU (its vectorised loop runs across planes, so the bits of the reference change with the
    number of masks per call and with the thread count); allow 2 ulp there.
    """
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, *mask_hw, generator=g) * 4
    got = rescale_masks(logits, padded, image, output, chunk_size=chunk)
    ref = reference_rescale(logits, padded, image, output)
    assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == ref.shape
    if chunk in (None, 100):
        assert torch.equal(got, ref)
    else:
        torch.testing.assert_close(got, ref, rtol=0, atol=2.5e-7)


@pytest.mark.parametrize("chunk", [None, 4])
def test_rescale_masks_equals_reference_at_coco_size(chunk):
    """A COCO image (427x640 -> 800x1202, padded 800x1216, masks at stride 4): identical bits
    also in chunks (the planes' widths are whole vectors here)."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(9, 200, 304, generator=g) * 3
    args = ((800, 1216), (800, 1202), (427, 640))
    got = rescale_masks(logits, *args, chunk_size=chunk)
    assert torch.equal(got, reference_rescale(logits, *args))


def test_rescale_masks_no_masks():
    assert rescale_masks(torch.zeros(0, 4, 4), (16, 16), (15, 16), (8, 8)).shape == (0, 8, 8)


@pytest.mark.parametrize("hw, size", [((64, 96), (16, 24)), ((30, 45), (10, 15)),
                                      ((40, 24), (5, 12)), ((7, 7), (7, 7)), ((10, 6), (2, 1))])
def test_downsample_masks_bool_shortcut_is_exact(hw, size):
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(5, *hw, generator=g) > 0.6
    ref = F.interpolate(masks[:, None].float(), size=size, mode="bilinear",
                        align_corners=False)[:, 0]
    assert torch.equal(downsample_masks(masks, size), ref)
    soft = torch.rand(5, *hw, generator=g)  # float masks: the plain interpolation
    assert torch.equal(downsample_masks(soft, size), F.interpolate(
        soft[:, None], size=size, mode="bilinear", align_corners=False)[:, 0])
    assert downsample_masks(masks[:0], size).shape == (0, *size)


def reference_targets(batch, hp, wp, stride, num_things):
    padded, classes, counts = [], [], []
    for x in batch:
        gm = x["instances"].gt_masks
        m = (gm.tensor if isinstance(gm, BitMasks) else torch.as_tensor(gm)).float()
        padded.append(F.pad(m, (0, wp - m.shape[-1], 0, hp - m.shape[-2])))
        classes.append(x["instances"].gt_classes)
        counts.append(m.shape[0])
    all_masks = torch.cat(padded)
    all_masks = F.interpolate(all_masks[:, None], size=(hp // stride, wp // stride),
                              mode="bilinear", align_corners=False)[:, 0]
    out = []
    for masks, labels in zip(all_masks.split(counts), classes):
        t = labels < num_things
        out.append({"labels": labels[t], "masks": masks[t], "stuff_labels": labels[~t],
                    "stuff_masks": masks[~t]})
    return out


def _instances(h, w, classes, seed, soft=False):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    m = torch.rand(len(classes), h, w, generator=g)
    inst.gt_masks = m if soft else BitMasks(m > 0.5)
    return inst


@pytest.mark.parametrize("soft_second", [False, True])
def test_prepare_targets_equals_reference(soft_second):
    # stuff (>= 3) listed before things in image 0; an image without stuff; an empty image
    batch = [
        {"instances": _instances(30, 41, [4, 0, 3, 2, 5, 1], 0)},
        {"instances": _instances(27, 64, [2, 2, 0], 1, soft=soft_second)},
        {"instances": _instances(32, 20, [], 2)},
    ]
    hp, wp = 32, 64
    images = ImageList(torch.zeros(3, 3, hp, wp), [(30, 41), (27, 64), (32, 20)])
    fake = SimpleNamespace(device=torch.device("cpu"), mask_assign_stride=4,
                           num_thing_classes=3)
    got = KNet.prepare_targets(fake, batch, images)
    ref = reference_targets(batch, hp, wp, 4, 3)
    assert len(got) == 3
    for g, r in zip(got, ref):
        assert set(g) == set(r)
        for k in r:
            assert g[k].dtype == r[k].dtype and torch.equal(g[k], r[k]), k
    assert got[0]["labels"].tolist() == [0, 2, 1] and got[0]["stuff_labels"].tolist() == [4, 3, 5]


def test_match_many_equals_separate_calls():
    g = torch.Generator().manual_seed(3)
    h = w = 6
    targets = [
        {"labels": torch.tensor([1, 0, 2]), "masks": torch.rand(3, h, w, generator=g)},
        {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, h, w)},
        {"labels": torch.tensor([2] * 6), "masks": torch.rand(6, h, w, generator=g)},
    ]
    preds = [(torch.randn(3, 5, h, w, generator=g), None)] + [
        (torch.randn(3, 5, h, w, generator=g), torch.randn(3, 5, 3, generator=g))
        for _ in range(2)
    ]
    matcher = HungarianMatcher()
    many = matcher.match_many(preds, targets)
    assert len(many) == 3
    for (mask_logits, cls_logits), got in zip(preds, many):
        ref = matcher(mask_logits, cls_logits, targets)
        assert len(got) == 3
        for (p, t), (rp, rt) in zip(got, ref):
            assert torch.equal(p, rp) and torch.equal(t, rt)
    assert [len(p) for p, _ in many[1]] == [3, 0, 5]
    assert matcher.match_many([], targets) == []


def test_match_stages_uses_one_match_many_call(monkeypatch):
    crit = KNetCriterion(matcher=HungarianMatcher(), num_thing_classes=2, num_stuff_classes=1,
                         num_proposals=3)
    g = torch.Generator().manual_seed(4)
    rpn = {"mask_logits": torch.randn(1, 3, 4, 4, generator=g)}
    stages = [{"mask_logits": torch.randn(1, 4, 4, 4, generator=g),
               "cls_logits": torch.randn(1, 4, 3, generator=g)} for _ in range(3)]
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.rand(2, 4, 4, generator=g)}]
    calls = []
    orig = crit.matcher.match_many
    monkeypatch.setattr(crit.matcher, "match_many",
                        lambda preds, tg, copies=None: calls.append((len(preds), copies))
                        or orig(preds, tg, copies))
    matches = crit.match_stages(rpn, stages, targets)
    assert calls == [(3, [1, 1, 1])] and len(matches) == 4 and matches[0] is matches[1]
    for prev, m in zip(stages[:2], matches[2:]):
        (p, t), = crit.matcher(prev["mask_logits"][:, :3], prev["cls_logits"][:, :3, :2],
                               targets)
        assert torch.equal(m[0][0], p) and torch.equal(m[0][1], t)
    n = crit._num_pos_avg(7, torch.device("cpu"))
    assert n.dtype == torch.float32 and n.item() == 7.0


@pytest.mark.parametrize("k", [5, 12])
def test_instance_inference_mask_gather_paths(k):
    g = torch.Generator().manual_seed(5)
    cls_logits, probs = torch.randn(6, 3, generator=g), torch.rand(6, 9, 11, generator=g)
    inst = instance_inference(cls_logits, probs, 3, max_per_image=k, mask_threshold=0.5)
    kernel = torch.div(cls_logits.sigmoid().flatten().topk(min(k, 18)).indices, 3,
                       rounding_mode="floor")
    assert torch.equal(inst.pred_masks, probs[kernel] > 0.5)
