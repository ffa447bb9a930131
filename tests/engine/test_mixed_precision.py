"""knet_d2.engine.mixed_precision: SOLVER.AMP trains on the CPU in bf16 through the Trainer,
K-Net's losses stay float32 under autocast, fp16 unscales before the optimizer's clipping, and
settings a device cannot train with are start-up errors."""
from __future__ import annotations

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn

from knet_d2 import get_knet_cfg
from knet_d2.config import ConfigError
from knet_d2.engine import mixed_precision
from knet_d2.engine.mixed_precision import MixedPrecisionTrainer, check_mixed_precision
from knet_d2.engine.startup_checks import check_training_precision
from knet_d2.engine.trainer import Trainer
from tests.helpers.tiny_knet import make_input, tiny_cfg
from tests.helpers.tiny_training import CONFIG, register_tiny, tiny_train_opts


@pytest.mark.parametrize("precision,device,message", [
    ("fp16", "cpu", "PRECISION 'fp16' needs CUDA; on the CPU set SOLVER.AMP.PRECISION bf16"),
    ("fp8", "cuda", "SOLVER.AMP.PRECISION must be one of \\['bf16', 'fp16'\\], got 'fp8'"),
    ("bf16", "meta", "runs on cuda or cpu, not meta"),
])
def test_settings_a_device_cannot_train_with_are_config_errors(precision, device, message):
    with pytest.raises(ConfigError, match=message):
        check_mixed_precision(True, precision, device)
    check_mixed_precision(False, precision, device)  # AMP off: nothing to check
    cfg = get_knet_cfg(str(CONFIG), ["MODEL.DEVICE", device, "SOLVER.AMP.ENABLED", "True",
                                     "SOLVER.AMP.PRECISION", precision])
    with pytest.raises(ConfigError, match=message):
        check_training_precision(cfg)


def test_bf16_training_on_the_cpu_through_the_trainer(tmp_path):
    register_tiny(tmp_path / "data")
    opts = tiny_train_opts(tmp_path / "out", max_iter=3, period=100, workers=0)
    cfg = get_knet_cfg(str(CONFIG), opts + ["SOLVER.AMP.ENABLED", "True",
                                            "SOLVER.AMP.PRECISION", "bf16"])
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    step = trainer._trainer
    assert isinstance(step, MixedPrecisionTrainer) and step.grad_scaler is None
    assert (step.device_type, step.precision) == ("cpu", "bf16")
    conv_dtypes = []
    first_conv = next(m for m in trainer.model.backbone.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: conv_dtypes.append(o.dtype))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert conv_dtypes == [torch.bfloat16] * 3
    params = dict(trainer.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    assert sum(not torch.equal(before[n], p) for n, p in params.items()) > 0.9 * len(params)
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
    assert "grad_scaler" not in step.state_dict()


def test_knet_losses_are_float32_and_close_to_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    batch = [make_input(64, 64, [0, 3], seed=1), make_input(64, 48, [1], seed=2)]
    seed = torch.random.get_rng_state()
    fp32 = model(batch)
    torch.random.set_rng_state(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(batch)
    assert set(bf16) == set(fp32)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in bf16.values())
    total32, total16 = sum(fp32.values()), sum(bf16.values())
    assert abs(total16 - total32) < 0.05 * total32
    assert not torch.equal(total16, total32)  # the forward did run in bf16


class _RecordingSGD(torch.optim.SGD):
    """SGD that records the gradient it steps with (what gradient clipping would see)."""

    def step(self, closure=None):
        self.seen = [p.grad.clone() for g in self.param_groups for p in g["params"]]
        return super().step(closure)


class _Loss(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return {"loss": self.fc(x).float().pow(2).mean()}


def test_fp16_steps_with_the_unscaled_gradients(monkeypatch):
    """The scaler path on the CPU (the product refuses fp16 there only for speed): the
    optimizer, and so SOLVER.CLIP_GRADIENTS, sees the true gradient, not the scaled one."""
    monkeypatch.setattr(mixed_precision, "check_mixed_precision", lambda *args: None)
    torch.manual_seed(0)
    model = _Loss()
    x = torch.randn(8, 4)
    reference = _Loss()
    reference.load_state_dict(model.state_dict())
    with torch.autocast("cpu", dtype=torch.float16):
        reference(x)["loss"].backward()
    opt = _RecordingSGD(model.parameters(), lr=0.1)
    step = MixedPrecisionTrainer(model, [x], opt, device_type="cpu", precision="fp16")
    assert step.grad_scaler.get_scale() == 2.0**16
    # a scale at which this loss's fp16 gradients stay finite (else the step is skipped)
    step.grad_scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    step._data_loader_iter_obj = iter([x])
    with EventStorage(0) as storage:
        step.storage = storage
        step.iter = 0
        step.run_step()
    for seen, ref in zip(opt.seen, [p.grad for p in reference.parameters()]):
        torch.testing.assert_close(seen, ref, rtol=1e-2, atol=1e-4)
    assert "grad_scaler" in step.state_dict()
