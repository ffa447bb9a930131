"""``SOLVER.TIME_BUDGET``: the schedule fitted to a wall-clock budget (knet_d2.engine.time_budget).

The fitting arithmetic is checked directly; the Trainer runs with a fake clock (one second per
iteration, three per evaluation) so that the fitted length is exact and the test does not
depend on this machine's speed."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from detectron2.solver import build_lr_scheduler

from knet_d2.config import ConfigError
from knet_d2.engine import time_budget
from knet_d2.engine.startup_checks import check_time_budget
from knet_d2.engine.time_budget import (
    EvalTimingHook,
    TimeBudgetHook,
    evaluations_left,
    fit_schedule,
    scaled_schedule,
)
from knet_d2.engine.trainer import Trainer
from tests.helpers.paths import load_config
from tests.helpers.tiny_training import CONFIG, register_tiny, tiny_train_opts


def test_evaluations_left_counts_periodic_ones_before_the_end_and_the_final_one():
    assert evaluations_left(0, 10, 3) == 4  # after iterations 3, 6, 9, and the final one
    assert evaluations_left(3, 10, 3) == 3
    assert evaluations_left(0, 9, 3) == 3  # the one at 9 is the final one
    assert evaluations_left(9, 9, 3) == 1
    assert evaluations_left(5, 100, 0) == 1  # no periodic evaluation: the final one only


def test_scaled_schedule_keeps_fractions():
    s = scaled_schedule(1000, (800, 933), 250, 230)
    assert (s.max_iter, s.steps, s.eval_period) == (230, (184, 215), 58)
    assert scaled_schedule(1000, (800,), 0, 3000).eval_period == 0
    assert scaled_schedule(1000, (999,), 100, 1).steps == (1,)


def test_fit_schedule_fills_the_budget_and_counts_the_evaluations():
    # no evaluation cost: 10 s used after 50 iterations, 0.5 s each, 100 s budget -> 180 more
    s = fit_schedule(100.0, 10.0, 50, 0.5, 0.0, 1000, (800, 933), 250)
    assert (s.max_iter, s.steps, s.eval_period) == (230, (184, 215), 58)
    # each evaluation left costs 4 s: the iterations make room for them, and the longest
    # schedule that fits is taken (the evaluations left change with the scaled period)

    def needed(max_iter):
        s = scaled_schedule(1000, (800, 933), 250, max_iter)
        return 10.0 + (max_iter - 50) * 0.5 + 4.0 * evaluations_left(50, max_iter, s.eval_period)

    s = fit_schedule(100.0, 10.0, 50, 0.5, 4.0, 1000, (800, 933), 250)
    assert needed(s.max_iter) <= 100.0 < min(needed(m) for m in range(s.max_iter + 1, 260))
    assert s == scaled_schedule(1000, (800, 933), 250, 200)  # 3 evaluations left, 97 s


def test_a_spent_budget_ends_the_run_at_the_next_iteration():
    assert fit_schedule(60.0, 75.0, 400, 0.1, 2.0, 1000, (800,), 0).max_iter == 401
    with pytest.raises(ValueError, match="seconds_per_iter"):
        fit_schedule(60.0, 1.0, 4, 0.0, 0.0, 1000, (800,), 0)


@pytest.mark.parametrize("key,value,message", [
    ("SECONDS", -1, "SECONDS must be >= 0"),
    ("FIT_PERIOD", 0, "FIT_PERIOD must be >= 1"),
])
def test_bad_budget_settings_are_refused(key, value, message):
    cfg = load_config(CONFIG, ["SOLVER.TIME_BUDGET.SECONDS", "600", f"SOLVER.TIME_BUDGET.{key}",
                               str(value)])
    with pytest.raises(ConfigError, match=message):
        check_time_budget(cfg)


class _FakeClock:
    """Seconds = training steps run + 3 per evaluation run (``extra``, added by the test)."""

    def __init__(self):
        self.steps, self.extra, self.trainer = 0, 0.0, None

    def __call__(self) -> float:
        return self.steps + self.extra

    def count_steps_of(self, trainer) -> None:
        run_step, self.trainer = trainer.run_step, trainer

        def counted():
            run_step()
            self.steps += 1

        trainer.run_step = counted


def test_trainer_fits_its_schedule_to_the_budget(tmp_path, monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(time_budget, "time", SimpleNamespace(perf_counter=clock))
    evaluated_at = []

    def fake_test(cls, cfg, model, evaluators=None):
        evaluated_at.append(clock.trainer.iter + 1)
        clock.extra += 3.0
        return {}

    monkeypatch.setattr(Trainer, "test", classmethod(fake_test))
    register_tiny(tmp_path / "data")
    opts = tiny_train_opts(tmp_path / "out", max_iter=10, period=1000, workers=0) + [
        "SOLVER.STEPS", "(8,)", "TEST.EVAL_PERIOD", "5",
        "SOLVER.TIME_BUDGET.SECONDS", "40", "SOLVER.TIME_BUDGET.FIT_PERIOD", "4",
    ]
    cfg = load_config(CONFIG, opts)
    cfg.freeze()
    trainer = Trainer(cfg)
    clock.count_steps_of(trainer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # pace 1 s, evaluations 3 s: the first fit (after 8 iterations, 11 s used) gives 31
    # iterations, with evaluations after 16 (period 5 x 3.1) and at the end: 31 + 3 x 3 = 40 s
    assert trainer.max_iter == 31 and trainer.iter == 31
    assert evaluated_at == [5, 16, 32]  # the final one runs after the loop (iter + 1)
    assert clock() == 40.0
    budget = next(h for h in trainer._hooks if isinstance(h, TimeBudgetHook))
    assert budget.schedule.steps == (25,) and budget.schedule.eval_period == 16
    lrs = [lr for lr, _ in trainer.storage.history("lr").values()]
    assert len(lrs) == 31
    assert lrs[24] == pytest.approx(cfg.SOLVER.BASE_LR)  # the LR step moved from 8 to 25
    assert lrs[25] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA)
    assert (tmp_path / "out" / "model_final.pth").is_file()  # the fitted end is the final one
    state = trainer.state_dict()["hooks"]["TimeBudgetHook"]
    assert state == {"seconds_used": 40.0, "max_iter": 31}


def test_restored_budget_state_sets_the_schedule_and_the_learning_rate():
    cfg = load_config(CONFIG, ["SOLVER.MAX_ITER", "100", "SOLVER.STEPS", "(80,)",
                               "SOLVER.WARMUP_ITERS", "10", "TEST.EVAL_PERIOD", "20"])
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(45):
        optimizer.step()
        scheduler.step()
    trainer = SimpleNamespace(iter=45, max_iter=100, optimizer=optimizer, scheduler=scheduler,
                              build_lr_scheduler=build_lr_scheduler)
    evaluation = EvalTimingHook(20, lambda: {})
    checkpoint = SimpleNamespace(max_iter=100)
    now = [7.0]
    hook = TimeBudgetHook(cfg, 600.0, 100, evaluation, checkpoint_hook=checkpoint,
                          clock=lambda: now[0])
    hook.trainer = trainer
    hook.load_state_dict({"seconds_used": 250.0, "max_iter": 50})
    assert hook.elapsed() == 250.0
    hook.before_train()
    now[0] = 9.0
    assert hook.elapsed() == 252.0
    assert (trainer.max_iter, checkpoint.max_iter, evaluation.period) == (50, 50, 10)
    # the rebuilt scheduler continues where the restored one was, on the 50-iteration schedule
    assert trainer.scheduler.last_epoch == 45
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA)
    fresh_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    fresh = build_lr_scheduler(
        load_config(CONFIG, ["SOLVER.MAX_ITER", "50", "SOLVER.STEPS", "(40,)",
                             "SOLVER.WARMUP_ITERS", "10"]),
        fresh_optimizer,
    )
    for _ in range(45):
        fresh_optimizer.step()
        fresh.step()
    assert trainer.scheduler.get_last_lr() == pytest.approx(fresh.get_last_lr())
