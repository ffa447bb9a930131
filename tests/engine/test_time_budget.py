"""``SOLVER.TIME_BUDGET``: the schedule fitted to a wall-clock budget (knet_d2.engine.time_budget).

The fitting arithmetic is checked directly; the Trainer runs with a fake clock (one second per
iteration, three per evaluation) so that the fitted length is exact and the test does not
depend on this machine's speed."""
from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace

import pytest
import torch
from detectron2.engine import HookBase, launch
from detectron2.solver import build_lr_scheduler
from detectron2.utils import comm

from knet_d2.config import ConfigError
from knet_d2.engine import time_budget
from knet_d2.engine.startup_checks import check_time_budget
from knet_d2.engine.time_budget import (
    EvalTimingHook,
    TimeBudgetHook,
    evaluations_left,
    fit_schedule,
    periodic_evaluations,
    scaled_schedule,
)
from knet_d2.engine.trainer import Trainer
from tests.helpers.paths import load_config
from tests.helpers.tiny_training import CONFIG, register_tiny, tiny_train_opts


def test_evaluations_left_counts_periodic_ones_before_the_end_and_the_final_one():
    assert periodic_evaluations(10, 3) == 3 and periodic_evaluations(9, 3) == 2
    assert periodic_evaluations(5000, 1250) == 3 and periodic_evaluations(10, 0) == 0
    assert evaluations_left(10, 3, 0, 3) == 4  # after iterations 3, 6, 9, and the final one
    assert evaluations_left(10, 3, 1, 3) == 3
    assert evaluations_left(9, 3, 0, 2) == 3  # the one at 9 is the final one
    assert evaluations_left(9, 3, 2, 2) == 1
    assert evaluations_left(9, 4, 3, 3) == 1  # more run than the new period has: the final one
    assert evaluations_left(100, 10, 0, 3) == 4  # no more periodic ones than configured
    assert evaluations_left(100, 0, 0, 0) == 1  # no periodic evaluation: the final one only


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
        return 10.0 + (max_iter - 50) * 0.5 + 4.0 * evaluations_left(max_iter, s.eval_period, 0, 3)

    s = fit_schedule(100.0, 10.0, 50, 0.5, 4.0, 1000, (800, 933), 250)
    assert needed(s.max_iter) <= 100.0 < min(needed(m) for m in range(s.max_iter + 1, 260))
    assert s == scaled_schedule(1000, (800, 933), 250, 198)  # 3 periodic + 1 final: 100 s


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
    """Seconds = training steps run + 3 per evaluation (``Trainer.test`` patched to add them)."""

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


@pytest.fixture
def fake_time(monkeypatch):
    """``new()`` gives a trainer's fake clock (patched in before the trainer is built);
    ``evaluated_at`` lists the iteration counts at which each evaluation ran."""
    state = SimpleNamespace(clock=None, evaluated_at=[])

    def new():
        state.clock = _FakeClock()
        monkeypatch.setattr(time_budget, "time", SimpleNamespace(perf_counter=state.clock))
        return state.clock

    def fake_test(cls, cfg, model, evaluators=None):
        state.evaluated_at.append(state.clock.trainer.iter + 1)
        state.clock.extra += 3.0
        return {}

    monkeypatch.setattr(Trainer, "test", classmethod(fake_test))
    state.new = new
    return state


def _budget_cfg(tmp_path, checkpoint_period=1000):
    register_tiny(tmp_path / "data")
    opts = tiny_train_opts(tmp_path / "out", max_iter=10, period=checkpoint_period, workers=0)
    cfg = load_config(CONFIG, opts + [
        "SOLVER.STEPS", "(8,)", "TEST.EVAL_PERIOD", "3",
        "SOLVER.TIME_BUDGET.SECONDS", "40", "SOLVER.TIME_BUDGET.FIT_PERIOD", "4",
    ])
    cfg.freeze()
    return cfg


def _hook(trainer, kind):
    return next(h for h in trainer._hooks if isinstance(h, kind))


def test_trainer_fits_its_schedule_to_the_budget(tmp_path, fake_time):
    cfg = _budget_cfg(tmp_path)
    clock = fake_time.new()
    trainer = Trainer(cfg)
    clock.count_steps_of(trainer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    # 1 s per step, 3 s per evaluation: after the evaluations at 3 and 6 (12 s used), the fit
    # gives 28 iterations: evaluation period 8 (3 x 2.8), so the third periodic one at 24, and
    # the final one: 28 + 4 x 3 = 40 s, the budget
    assert trainer.max_iter == 28 and trainer.iter == 28
    assert fake_time.evaluated_at == [3, 6, 24, 29]  # the final one runs after the loop
    assert clock() == 40.0
    budget = _hook(trainer, TimeBudgetHook)
    assert budget.schedule.steps == (22,) and budget.schedule.eval_period == 8
    lrs = [lr for lr, _ in trainer.storage.history("lr").values()]
    assert len(lrs) == 28
    assert lrs[21] == pytest.approx(cfg.SOLVER.BASE_LR)  # the LR step moved from 8 to 22
    assert lrs[22] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA)
    assert (tmp_path / "out" / "model_final.pth").is_file()  # the fitted end is the final one
    hooks = trainer.state_dict()["hooks"]
    assert hooks["TimeBudgetHook"] == {"seconds_used": 40.0, "max_iter": 28, "steps": [22]}
    assert hooks["EvalTimingHook"] == {"periodic_done": 3, "eval_seconds": [3.0] * 4}


def test_a_resumed_run_keeps_the_seconds_used_and_ends_at_the_same_length(tmp_path, fake_time):
    """Interrupted after its checkpoint at iteration 9, the run resumes with the seconds,
    length and evaluations of that checkpoint and ends where the uninterrupted run ended."""
    cfg = _budget_cfg(tmp_path, checkpoint_period=10)
    clock = fake_time.new()
    first = Trainer(cfg)
    clock.count_steps_of(first)

    class Interrupt(HookBase):
        def before_step(self):
            if self.trainer.iter == 12:
                raise RuntimeError("interrupted")

    first.register_hooks([Interrupt()])
    first.resume_or_load(resume=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        first.train()
    assert (tmp_path / "out" / "model_0000009.pth").is_file()

    clock = fake_time.new()
    fake_time.evaluated_at.clear()
    second = Trainer(cfg)
    clock.count_steps_of(second)
    second.resume_or_load(resume=True)
    assert second.start_iter == 10
    second.train()
    assert second.max_iter == 28 and second.iter == 28
    assert fake_time.evaluated_at == [24, 29]
    # 16 s used by the checkpoint (10 steps, 2 evaluations) + 18 steps and 2 evaluations
    assert clock() == 24.0 and _hook(second, TimeBudgetHook).elapsed() == 40.0


def _schedule_cfg(max_iter: int, steps: str, warmup: int, eval_period: int):
    return load_config(CONFIG, ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", steps,
                                "SOLVER.WARMUP_ITERS", str(warmup),
                                "TEST.EVAL_PERIOD", str(eval_period)])


def _stub_trainer(cfg, iterations_done: int = 0) -> SimpleNamespace:
    """What the hook reads of a trainer: one parameter's SGD, D2's LR scheduler of ``cfg``
    stepped through ``iterations_done`` iterations, ``build_lr_scheduler``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(iterations_done):
        optimizer.step()
        scheduler.step()
    return SimpleNamespace(iter=iterations_done, max_iter=cfg.SOLVER.MAX_ITER,
                           optimizer=optimizer, scheduler=scheduler,
                           build_lr_scheduler=build_lr_scheduler)


def test_restored_budget_state_sets_the_schedule_and_the_learning_rate():
    cfg = _schedule_cfg(100, "(80,)", 10, 20)
    trainer = _stub_trainer(cfg, 45)
    optimizer = trainer.optimizer
    evaluation = EvalTimingHook(20, lambda: {}, periodic_total=4)  # its state: not restored here
    checkpoint = SimpleNamespace(max_iter=100)
    now = [7.0]
    hook = TimeBudgetHook(cfg, 600.0, 100, evaluation, checkpoint_hook=checkpoint,
                          clock=lambda: now[0])
    hook.trainer = trainer
    hook.load_state_dict({"seconds_used": 250.0, "max_iter": 50, "steps": [40]})
    assert hook.elapsed() == 250.0
    hook.before_train()
    now[0] = 9.0
    assert hook.elapsed() == 252.0
    assert (trainer.max_iter, checkpoint.max_iter, evaluation.period) == (50, 50, 10)
    # the rebuilt scheduler continues where the restored one was, on the 50-iteration schedule
    assert trainer.scheduler.last_epoch == 45
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA)
    fresh = _stub_trainer(_schedule_cfg(50, "(40,)", 10, 10), 45).scheduler
    assert trainer.scheduler.get_last_lr() == pytest.approx(fresh.get_last_lr())


def test_an_lr_step_the_training_reached_stays_where_it_was():
    cfg = _schedule_cfg(100, "(60, 80)", 10, 0)
    trainer = _stub_trainer(cfg)
    optimizer = trainer.optimizer
    evaluation = EvalTimingHook(0, lambda: {}, periodic_total=0)
    hook = TimeBudgetHook(cfg, 600.0, 100, evaluation, clock=lambda: 0.0)
    hook.trainer = trainer
    hook.before_train()
    hook._apply(50)  # steps at 30 and 40
    assert hook.schedule.steps == (30, 40)
    for _ in range(35):
        optimizer.step()
        trainer.scheduler.step()
    hook._apply(80)  # the step at 30 was reached: it stays; the one at 40 moves to 64
    assert hook.schedule.steps == (30, 64) and trainer.max_iter == 80
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA)
    hook._apply(40)  # shorter: the second step moves to 32, behind iteration 35: it takes effect
    assert hook.schedule.steps == (30, 32)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        cfg.SOLVER.BASE_LR * cfg.SOLVER.GAMMA ** 2)


def _fit_worker(out_dir):
    """One process of a 2-process group: its steps take (rank + 1) fake seconds each."""
    rank = comm.get_rank()
    cfg = _schedule_cfg(1000, "(800,)", 1, 0)
    trainer = _stub_trainer(cfg)
    optimizer = trainer.optimizer
    now = [0.0]
    hook = TimeBudgetHook(cfg, 100.0, 10, EvalTimingHook(0, lambda: {}, periodic_total=0),
                          clock=lambda: now[0])
    hook.trainer = trainer
    hook.before_train()
    for i in range(20):
        trainer.iter = i
        now[0] += rank + 1.0
        optimizer.step()
        trainer.scheduler.step()
        hook.after_step()
    torch.save(trainer.max_iter, os.path.join(out_dir, f"rank{rank}.pt"))
    # Leave the group together and close it before the interpreter exits: once, in a full
    # fresh-clone run (2026-12-06), both ranks of this short worker aborted at exit ("terminate
    # called without an active exception", SIGABRT) after passing every step.
    comm.synchronize()
    torch.distributed.destroy_process_group()


def test_every_process_trains_rank_0s_fitted_length():
    """Rank 0 steps in 1 s (20 s used after 20 iterations: 80 more fit 100 s), rank 1 in 2 s
    (its own fit would be 50): both train 100 iterations, or DDP would hang at the end."""
    with tempfile.TemporaryDirectory() as out:
        launch(_fit_worker, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
        lengths = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2)]
    assert lengths == [100, 100]
