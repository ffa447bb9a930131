"""knet_d2.test_time_augmentation: the semantic TTA mapper (scales, flips) and
SemanticSegmentorWithTTA (softmax average, un-flipping), on a fake model and end to end."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.modeling import build_model
from torch import nn

from knet_d2.test_time_augmentation import SemanticSegmentorWithTTA, SemSegDatasetMapperTTA
from tests.helpers.tiny_semantic import base_cfg, register_ade_sample, tiny_cfg


class _ConvModel(nn.Module):
    """Fake SemanticSegmentor: logits = 3x3 conv of the image, resized to (height, width)."""

    def __init__(self, symmetric: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        if symmetric:  # horizontally mirror-symmetric kernels -> flip-equivariant model
            with torch.no_grad():
                self.conv.weight.copy_((self.conv.weight + self.conv.weight.flip(-1)) / 2)
        self.calls = []

    def forward(self, batched):
        outs = []
        for x in batched:
            self.calls.append(tuple(x["image"].shape[-2:]))
            y = self.conv(x["image"].float()[None] / 255.0)
            y = F.interpolate(y, size=(x["height"], x["width"]), mode="bilinear",
                              align_corners=False)
            outs.append({"sem_seg": y[0]})
        return outs


def _tta_cfg(min_sizes, flip):
    cfg = base_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 40, 160
    cfg.TEST.AUG.MIN_SIZES, cfg.TEST.AUG.MAX_SIZE, cfg.TEST.AUG.FLIP = min_sizes, 1000, flip
    return cfg


def _tta_input():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 30, 50), dtype=np.uint8)
    return {"image": torch.as_tensor(img), "height": 30, "width": 50}


def test_tta_mapper_scales_and_flips():
    mapper = SemSegDatasetMapperTTA(_tta_cfg((20, 40, 60), True))
    outs = mapper(_tta_input())
    assert len(outs) == 6
    assert [tuple(o["image"].shape[-2:]) for o in outs[::2]] == [(20, 33), (40, 67), (60, 100)]
    assert all(o["height"] == 30 and o["width"] == 50 for o in outs)
    assert torch.equal(outs[1]["image"], outs[0]["image"].flip(-1))
    # the long-side target scales with the ratio (mmseg (2048, 512) x r), capped by MAX_SIZE
    m = SemSegDatasetMapperTTA(_tta_cfg((20, 80), False))
    assert m.scaled_size(10, 200, 20) == (4, 80) and m.scaled_size(10, 200, 80) == (16, 320)
    m.max_size = 100
    assert m.scaled_size(10, 200, 80) == (5, 100)


def test_tta_flip_equivariant_model_and_scale_average():
    inp = _tta_input()
    sym = _ConvModel(symmetric=True)
    flip = SemanticSegmentorWithTTA(_tta_cfg((20, 40, 60), True), sym, batch_size=4)(
        [inp])[0]["sem_seg"]
    noflip = SemanticSegmentorWithTTA(_tta_cfg((20, 40, 60), False), sym)([inp])[0]["sem_seg"]
    assert flip.shape == (4, 30, 50)
    assert torch.allclose(flip, noflip, atol=1e-5)
    assert torch.allclose(flip.sum(0), torch.ones(30, 50), atol=1e-5)  # probabilities
    # manual average of per-scale softmax
    manual = []
    mapper = SemSegDatasetMapperTTA(_tta_cfg((20, 40, 60), False))
    for aug in mapper(inp):
        with torch.no_grad():
            manual.append(sym([aug])[0]["sem_seg"].softmax(0))
    assert torch.allclose(noflip, torch.stack(manual).mean(0), atol=1e-6)
    # a non-symmetric model: flipped copies are un-flipped before averaging
    asym = _ConvModel(symmetric=False)
    res = SemanticSegmentorWithTTA(_tta_cfg((40,), True), asym)([inp])[0]["sem_seg"]
    a0 = asym([mapper(inp)[1]])[0]["sem_seg"].softmax(0)
    fl = dict(inp, image=inp["image"].flip(-1))
    a1 = asym([SemSegDatasetMapperTTA(_tta_cfg((40,), False))(fl)[0]])[0]["sem_seg"].softmax(0)
    assert torch.allclose(res, (a0 + a1.flip(-1)) / 2, atol=1e-5)


def test_tta_end_to_end_with_semantic_segmentor(shared_data, tmp_path):
    name = register_ade_sample(shared_data, tmp_path, "_test_knet_ade_sample_tta")
    cfg = tiny_cfg("FCN", num_classes=150)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 256
    cfg.TEST.AUG.MIN_SIZES, cfg.TEST.AUG.MAX_SIZE = (48, 64), 512
    cfg.DATALOADER.NUM_WORKERS = 0
    model = build_model(cfg).eval()
    tta = SemanticSegmentorWithTTA(cfg, model)
    d = build_detection_test_loader(cfg, name).dataset[0]
    out = tta([d])[0]["sem_seg"]
    assert out.shape == (150, d["height"], d["width"])
    assert torch.allclose(out.sum(0), torch.ones(d["height"], d["width"]), atol=1e-4)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
