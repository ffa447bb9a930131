"""``MODEL.KNET.TEST.INSTANCE_SCORE_THRESH`` drives only the panoptic merge (documented in
docs/INFERENCE.md): instance outputs keep low scores, as D2's COCO evaluator needs for AP."""
from __future__ import annotations

import torch
from detectron2.modeling import build_model

from knet_d2.modeling.postprocessing import instance_inference, panoptic_inference
from tests.helpers.paths import REPO_ROOT, load_config

PANOPTIC = REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml"


def test_threshold_filters_panoptic_things_but_not_instances():
    # 2 thing kernels (scores ~0.9 and ~0.2) + 1 stuff kernel; T = 1 thing class, S = 1 stuff
    logit = torch.logit(torch.tensor([0.9, 0.2, 0.8]))
    cls_logits = torch.full((3, 2), -10.0)
    cls_logits[0, 0], cls_logits[1, 0], cls_logits[2, 1] = logit
    masks = torch.zeros(3, 8, 8)
    masks[0, :4, :4] = masks[1, 4:, 4:] = 0.95
    masks[2] = 0.6
    masks[2, :4, :4] = masks[2, 4:, 4:] = 0.0  # stuff everywhere else
    inst = instance_inference(cls_logits[:2], masks[:2], 1, max_per_image=10)
    assert torch.allclose(inst.scores, torch.tensor([0.9, 0.2]))  # the 0.2 one is returned
    _, infos = panoptic_inference(cls_logits, masks, 1, 1, 2, instance_score_thresh=0.3)
    assert sorted((s["isthing"], round(s["score"], 3)) for s in infos) == [
        (False, 0.8), (True, 0.9)]
    _, infos = panoptic_inference(cls_logits, masks, 1, 1, 2, instance_score_thresh=0.1)
    assert sum(s["isthing"] for s in infos) == 2


def test_model_returns_instances_below_the_threshold():
    cfg = load_config(PANOPTIC, ["MODEL.KNET.TEST.INSTANCE_SCORE_THRESH", "0.999"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)}])[0]
    scores = out["instances"].scores
    assert len(scores) > 0
    assert float(scores.min()) < 0.999  # instance output is not thresholded
    assert not any(s["isthing"] for s in out["panoptic_seg"][1])  # panoptic merge is
