"""Optimizer recipe (AdamW, backbone LR multiplier, full-model clipping) and bad-sample skipping."""
import logging

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from knet_d2 import add_knet_config
from knet_d2.data.skip_bad_samples import SkipBadSamples
from knet_d2.solver import add_full_model_gradient_clipping, build_knet_optimizer


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)


def _cfg(**solver):
    cfg = get_cfg()
    add_knet_config(cfg)
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.05
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def test_adamw_with_backbone_multiplier():
    model = _Toy()
    opt = build_knet_optimizer(_cfg(), model)
    assert isinstance(opt, torch.optim.AdamW)
    lr_of = {}
    for g in opt.param_groups:
        for p in g["params"]:
            lr_of[id(p)] = (g["lr"], g["weight_decay"])
    for name, p in model.named_parameters():
        lr, wd = lr_of[id(p)]
        expected = 1e-4 * (0.25 if name.startswith("backbone") else 1.0)
        assert lr == pytest.approx(expected), name
        assert wd == pytest.approx(0.05), name  # official recipe: decay on norms and biases too


def test_full_model_clipping_clips_global_norm():
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    model = _Toy()
    opt = build_knet_optimizer(cfg, model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    opt.step()
    total = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert total.item() == pytest.approx(1.0, rel=1e-4)


def test_clipping_subclass_keeps_optimizer_type():
    cls = add_full_model_gradient_clipping(torch.optim.SGD, 0.5)
    assert issubclass(cls, torch.optim.SGD)
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 3.0)
    cls([p], lr=0.0).step()
    assert p.grad.norm().item() == pytest.approx(0.5, rel=1e-4)


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_knet_optimizer(_cfg(OPTIMIZER="LAMB"), _Toy())


def test_skip_bad_samples_returns_none_and_counts(caplog):
    def mapper(d):
        if d["file_name"] == "bad.jpg":
            raise OSError("cannot identify image file")
        return {"ok": d["file_name"]}

    wrapped = SkipBadSamples(mapper)
    assert wrapped({"file_name": "good.jpg"}) == {"ok": "good.jpg"}
    with caplog.at_level(logging.WARNING):
        assert wrapped({"file_name": "bad.jpg"}) is None
    assert wrapped.num_skipped == 1
    assert "bad.jpg" in caplog.text and "cannot identify" in caplog.text


def test_skip_bad_samples_does_not_swallow_interrupts():
    def mapper(d):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SkipBadSamples(mapper)({"file_name": "x.jpg"})


def test_fused_adamw_matches_unfused_step():
    """On CPU the optimizer uses the fused AdamW kernel (torch >= 2.4; the per-tensor loop
    before); either way it must update like torch's plain AdamW."""
    torch.manual_seed(0)
    model, reference = _Toy(), _Toy()
    reference.load_state_dict(model.state_dict())
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_knet_optimizer(_cfg(BACKBONE_MULTIPLIER=1.0), model)
    assert bool(opt.defaults.get("fused")) is (torch.__version__ >= "2.4")  # TorchVersion order
    plain = torch.optim.AdamW(reference.parameters(), lr=1e-4, weight_decay=0.05)
    for _ in range(3):
        for p, q in zip(model.parameters(), reference.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt.step()
        plain.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert not torch.equal(p, initial[name]), name
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
