"""knet_d2.engine.channels_last: with SOLVER.CHANNELS_LAST the backbone trains on channels-last
batches (K-Net and D2's SemanticSegmentor), the losses and gradients are those of the NCHW step,
evaluation and the weights keep their layout, and a model without a backbone is refused."""
from __future__ import annotations

import copy

import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from knet_d2 import get_knet_cfg
from knet_d2.config import ConfigError
from knet_d2.engine.channels_last import train_in_channels_last
from knet_d2.engine.trainer import Trainer
from tests.helpers.memory_format import is_channels_last
from tests.helpers.paths import REPO_ROOT, load_config
from tests.helpers.tiny_knet import make_input, tiny_cfg
from tests.helpers.tiny_training import CONFIG, register_tiny, tiny_train_opts

SEMANTIC = REPO_ROOT / "configs/synthetic/semantic/knet_upernet_tiny.yaml"


def _spy_backbone_input(model: nn.Module) -> list:
    """Record, per backbone call, whether its input batch arrived channels-last (the spy runs
    after any hook registered before it)."""
    seen = []
    model.backbone.register_forward_pre_hook(
        lambda m, args: seen.append(is_channels_last(args[0]))
    )
    return seen


def _semantic_input(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
    sem_seg = torch.randint(0, 8, (64, 64), generator=g)
    sem_seg[:8] = 255  # an unlabeled band
    return {"image": image, "sem_seg": sem_seg, "height": 64, "width": 64}


def _losses_and_grads(model: nn.Module, batch: list) -> tuple:
    model.zero_grad()
    torch.manual_seed(0)  # same dropout draws in both models
    losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def _knet_model_and_batch():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    return model, [make_input(64, 96, [0, 1, 3], seed=1), make_input(64, 96, [2, 4], seed=2)]


def _semantic_model_and_batch():
    cfg = load_config(SEMANTIC, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    return build_model(cfg).train(), [_semantic_input(1), _semantic_input(2)]


@pytest.mark.parametrize("make", [_knet_model_and_batch, _semantic_model_and_batch],
                         ids=["knet", "semantic_segmentor"])
def test_training_step_runs_channels_last_with_the_losses_and_gradients_of_nchw(make):
    plain, batch = make()
    hooked = copy.deepcopy(plain)
    handle = train_in_channels_last(hooked)
    seen_plain, seen_hooked = _spy_backbone_input(plain), _spy_backbone_input(hooked)
    conv_outputs = []
    first_conv = next(m for m in hooked.backbone.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: conv_outputs.append(is_channels_last(o)))

    losses, grads = _losses_and_grads(plain, batch)
    losses_cl, grads_cl = _losses_and_grads(hooked, batch)

    assert seen_plain == [False] and seen_hooked == [True] and conv_outputs == [True]
    assert losses_cl.keys() == losses.keys()
    for k in losses:
        assert losses_cl[k] == pytest.approx(losses[k], rel=1e-4, abs=1e-5), k
    assert grads_cl.keys() == grads.keys() and len(grads) > 10
    # Float rounding of another summation order, which batch norm's backward amplifies: small
    # against the whole gradient and against each tensor, where a misread layout would be off
    # by the gradient's own size.
    flat, flat_cl = (torch.cat([g[n].flatten() for n in sorted(grads)]) for g in (grads, grads_cl))
    assert float((flat_cl - flat).norm()) <= 3e-3 * float(flat.norm())
    for n in grads:
        scale = float(grads[n].abs().max())
        assert float((grads_cl[n] - grads[n]).abs().max()) <= 3e-2 * scale + 1e-7, n
    # The weights keep their memory layout and values (checkpoints are unchanged), and every
    # gradient has its parameter's strides (what DDP's buckets need).
    assert all(p.is_contiguous() for p in hooked.parameters())
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), hooked.parameters()))
    params = dict(hooked.named_parameters())
    assert {n: grads_cl[n].stride() for n in grads_cl} == {
        n: params[n].stride() for n in grads_cl}
    handle.remove()
    _losses_and_grads(hooked, batch)
    assert seen_hooked == [True, False]


def test_knet_hands_its_losses_standard_layout_logits():
    """The stage-0 logits come from convolutions (NHWC after a channels-last backbone); the
    losses get them, and every stage's, in the standard layout."""
    model, batch = _knet_model_and_batch()
    train_in_channels_last(model)
    rpn, stages = model.forward_kernels(model.preprocess_image(batch))
    logits = [*rpn.values(), *(v for stage in stages for v in stage.values())]
    assert len(logits) == 2 + 2 * len(stages) and all(t.is_contiguous() for t in logits)


def test_evaluation_keeps_its_own_memory_format():
    cfg = tiny_cfg(channels_last="off")
    torch.manual_seed(0)
    model = build_model(cfg)
    train_in_channels_last(model)
    seen = _spy_backbone_input(model)
    model.eval()
    with torch.no_grad():
        model([make_input(64, 96, [0])])
    model.train()
    model([make_input(64, 96, [0, 1])])
    assert seen == [False, True]


def test_a_model_without_a_backbone_is_refused_naming_the_switch():
    with pytest.raises(ConfigError, match="SOLVER.CHANNELS_LAST: the model \\(Linear\\) has no"):
        train_in_channels_last(nn.Linear(2, 2))


def test_the_trainer_applies_the_switch_and_is_off_by_default(tmp_path):
    assert get_knet_cfg(str(CONFIG)).SOLVER.CHANNELS_LAST is False
    register_tiny(tmp_path / "data")
    for on in (False, True):
        opts = tiny_train_opts(tmp_path / f"out_{on}", max_iter=3, period=100, workers=0)
        cfg = get_knet_cfg(str(CONFIG), opts + ["SOLVER.CHANNELS_LAST", str(on)])
        trainer = Trainer(cfg)
        seen = _spy_backbone_input(trainer.model)
        trainer.resume_or_load(resume=False)
        trainer.train()
        assert seen == [on] * 3, on
        final = torch.load(tmp_path / f"out_{on}" / "model_final.pth", weights_only=False)
        assert all(v.is_contiguous() for v in final["model"].values())


def _group_norm_io(model: nn.Module) -> list:
    """Record, per GroupNorm call, (input channels-last, input dtype, output channels-last), as
    the norm itself sees its input and as the next layer gets its output (the spies run after
    any hooks registered before them)."""
    seen, pending = [], []
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            m.register_forward_pre_hook(lambda m, args: pending.append(
                (is_channels_last(args[0]), args[0].dtype)))
            m.register_forward_hook(lambda m, args, out: seen.append(
                (*pending.pop(), is_channels_last(out))))
    return seen


def test_bf16_group_norms_run_nchw_and_hand_on_channels_last():
    """On the CPU a bf16 GroupNorm takes its slow path on channels-last input: in training it
    gets the input NCHW-contiguous and its output goes on channels-last, with the values of the
    direct call; fp32 and evaluation calls pass unchanged."""
    model, batch = _knet_model_and_batch()
    train_in_channels_last(model)
    seen = _group_norm_io(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch)
    bf16 = list(seen)
    seen.clear()
    model(batch)  # fp32: each input reaches the norm as it is
    fp32 = list(seen)
    assert len(bf16) == len(fp32) >= 4 and all(dtype == torch.bfloat16 for _, dtype, _ in bf16)
    # bf16: no norm sees a channels-last input, and each hands on the layout its input had
    # (the layouts the fp32 norms see), channels-last for most of them
    assert not any(cl_in for cl_in, _, _ in bf16), bf16
    assert [cl_out for _, _, cl_out in bf16] == [cl_in for cl_in, _, _ in fp32]
    assert sum(cl_in for cl_in, _, _ in fp32) >= 4
    assert all(cl_in == cl_out for cl_in, _, cl_out in fp32)

    gn = nn.GroupNorm(4, 8).train()
    nn.init.normal_(gn.weight)
    nn.init.normal_(gn.bias)
    x = torch.randn(2, 8, 6, 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    direct = gn(x)
    hooked = copy.deepcopy(gn)
    hooked.backbone = nn.Identity()  # the switch needs a backbone to hook
    train_in_channels_last(hooked)
    seen = _group_norm_io(hooked)
    out = hooked(x)
    assert is_channels_last(out) and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), direct.float(), atol=2e-2, rtol=2e-2)
    assert float((out.float() - direct.float()).abs().mean()) < 2e-3
    hooked.eval()
    hooked(x)  # evaluation: the direct call
    assert seen == [(False, torch.bfloat16, True), (True, torch.bfloat16, True)]
