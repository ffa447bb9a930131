"""Training fitted to a wall-clock budget: ``SOLVER.TIME_BUDGET.SECONDS``.

With a budget, ``SOLVER.MAX_ITER``, ``SOLVER.STEPS`` and ``TEST.EVAL_PERIOD`` give the shape
of the schedule and the budget gives its length. :class:`TimeBudgetHook` times the iterations
and the evaluations of the run and, every ``SOLVER.TIME_BUDGET.FIT_PERIOD`` iterations and
after every evaluation, sets the number of iterations to what the budget still holds at the
measured pace. The LR steps and the evaluation period keep their fraction of the schedule
(an LR step that training has reached stays put; no more periodic evaluations run than the
configured schedule has), the warm-up keeps its length in iterations. A slower machine trains
fewer iterations, a faster one more, and both end near the budget.

What the budget counts: the seconds from the start of the training loop (model, optimizer and
data loader are built before) to its end, periodic evaluations and the evaluation after the
last iteration included; an evaluation is counted from the first one measured (with
``TEST.EVAL_PERIOD 0`` the final evaluation comes on top). A resumed run (``--resume``)
continues with the seconds its checkpoint had used, the evaluations it had run and their
times; it measures its pace anew.

Detectron2's ``TrainerBase.train`` loops over a ``range`` fixed when training starts;
:func:`train_adjustable` is the same loop reading ``trainer.max_iter`` at every iteration.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.engine import HookBase
from detectron2.engine.hooks import EvalHook
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

__all__ = [
    "FittedSchedule", "fit_schedule", "scaled_schedule", "evaluations_left",
    "periodic_evaluations",
    "EvalTimingHook", "TimeBudgetHook", "train_adjustable",
]

logger = logging.getLogger(__name__)

# Iterations after the (re)start whose times do not enter the pace: the first steps start the
# data loader and grow the allocator, and are slower than the rest.
WARM_ITERS = 5
# Rounds of "iterations -> evaluations left -> iterations" before the fitted length is checked.
_FIT_ROUNDS = 4


@dataclass(frozen=True)
class FittedSchedule:
    """A schedule's length and the iterations scaled with it."""

    max_iter: int
    steps: Tuple[int, ...]
    eval_period: int


def scaled_schedule(
    cfg_max_iter: int, cfg_steps: Sequence[int], cfg_eval_period: int, max_iter: int
) -> FittedSchedule:
    """The configured schedule stretched to ``max_iter`` iterations: every LR step and the
    evaluation period keep their fraction of the schedule (rounded, at least iteration 1)."""
    ratio = max_iter / cfg_max_iter
    steps = tuple(min(max_iter, max(1, round(s * ratio))) for s in cfg_steps)
    period = max(1, round(cfg_eval_period * ratio)) if cfg_eval_period > 0 else 0
    return FittedSchedule(max_iter, steps, period)


def periodic_evaluations(cfg_max_iter: int, cfg_eval_period: int) -> int:
    """The periodic evaluations of the configured schedule (those before its last iteration,
    whose evaluation runs after training): a fitted schedule runs as many."""
    return (cfg_max_iter - 1) // cfg_eval_period if cfg_eval_period > 0 else 0


def evaluations_left(max_iter: int, eval_period: int, periodic_done: int,
                     periodic_total: int) -> int:
    """Evaluations still to come in a schedule of ``max_iter`` iterations: the periodic ones
    (the k-th after iteration ``k * eval_period``, at most ``periodic_total``, none at
    ``max_iter``) not yet among the ``periodic_done``, and the one after the last iteration."""
    if eval_period <= 0:
        return 1
    periodic = min((max_iter - 1) // eval_period, periodic_total)
    return max(0, periodic - periodic_done) + 1


def fit_schedule(
    budget_s: float, elapsed_s: float, next_iter: int, seconds_per_iter: float,
    seconds_per_eval: float, cfg_max_iter: int, cfg_steps: Sequence[int], cfg_eval_period: int,
    periodic_done: int = 0,
) -> FittedSchedule:
    """The longest schedule of the configured shape that ends within ``budget_s``.

    ``elapsed_s`` seconds are used after ``next_iter`` iterations and ``periodic_done``
    periodic evaluations; each further iteration costs ``seconds_per_iter`` and each evaluation
    still to come ``seconds_per_eval``. At least one more iteration is trained (a budget
    already spent ends the run at the next one).
    """
    if seconds_per_iter <= 0:
        raise ValueError(f"seconds_per_iter must be > 0, got {seconds_per_iter}")

    periodic_total = periodic_evaluations(cfg_max_iter, cfg_eval_period)

    def schedule(max_iter: int) -> FittedSchedule:
        return scaled_schedule(cfg_max_iter, cfg_steps, cfg_eval_period, max_iter)

    def eval_seconds_left(max_iter: int) -> float:
        period = schedule(max_iter).eval_period
        return seconds_per_eval * evaluations_left(
            max_iter, period, periodic_done, periodic_total)

    def seconds_needed(max_iter: int) -> float:
        steps_s = (max_iter - next_iter) * seconds_per_iter
        return elapsed_s + steps_s + eval_seconds_left(max_iter)

    # The evaluations left depend on the length through the scaled period: a few rounds of
    # "length -> evaluations -> length" (they may alternate between two lengths), then the
    # longest of them shortened until it fits.
    candidates = [cfg_max_iter]
    for _ in range(_FIT_ROUNDS):
        left = budget_s - elapsed_s - eval_seconds_left(candidates[-1])
        candidates.append(next_iter + max(1, math.floor(left / seconds_per_iter)))
    max_iter = max(candidates[1:])
    while max_iter > next_iter + 1 and seconds_needed(max_iter) > budget_s:
        max_iter -= 1
    return schedule(max_iter)


class EvalTimingHook(EvalHook):
    """D2's ``EvalHook`` for a schedule whose length may change while it trains.

    The k-th periodic evaluation runs after the first iteration that reaches ``k * period``
    with the ``period`` of that moment (so a period that changes neither skips nor repeats one),
    for k up to ``periodic_total`` (the configured schedule's count: a fitted one runs as many);
    none at the last iteration, whose evaluation runs after training as in D2. It counts the
    periodic evaluations it ran (``periodic_done``, kept in checkpoints with the seconds of
    every evaluation, ``eval_seconds``, the final one included).
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], object],
                 periodic_total: int, clock: Optional[Callable[[], float]] = None):
        super().__init__(eval_period, eval_function)
        self._clock = clock or time.perf_counter
        self.periodic_total = periodic_total
        self.eval_seconds: list = []
        self.periodic_done = 0

    @property
    def period(self) -> int:
        return self._period

    @period.setter
    def period(self, value: int) -> None:
        self._period = value

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        k = self.periodic_done + 1
        due = self._period > 0 and k <= self.periodic_total and next_iter >= k * self._period
        if due and next_iter != self.trainer.max_iter:
            self.periodic_done += 1
            self._do_eval()

    def _do_eval(self):
        t0 = self._clock()
        try:
            return super()._do_eval()
        finally:
            self.eval_seconds.append(self._clock() - t0)

    def state_dict(self) -> dict:
        return {"periodic_done": self.periodic_done, "eval_seconds": list(self.eval_seconds)}

    def load_state_dict(self, state: dict) -> None:
        self.periodic_done = int(state["periodic_done"])
        self.eval_seconds = [float(s) for s in state["eval_seconds"]]


class TimeBudgetHook(HookBase):
    """Fits ``trainer.max_iter`` (and the LR schedule, the evaluation period and the final
    checkpoint) to ``budget_s`` seconds of training; see the module docstring.

    Place it after D2's ``LRScheduler`` hook and after ``eval_hook``. The trainer must loop
    with :func:`train_adjustable`.
    """

    def __init__(
        self, cfg: CfgNode, budget_s: float, fit_period: int, eval_hook: EvalTimingHook,
        checkpoint_hook: Optional[HookBase] = None, clock: Optional[Callable[[], float]] = None,
    ):
        self._cfg = cfg
        self._budget = float(budget_s)
        self._fit_period = int(fit_period)
        self._eval_hook = eval_hook
        self._checkpoint_hook = checkpoint_hook
        self._clock = clock or time.perf_counter
        self._used_before = 0.0  # seconds of the run before this (re)start, from a checkpoint
        self._restored: Optional[tuple] = None  # (max_iter, LR steps) of a checkpoint
        self._start: Optional[float] = None  # clock at the start of the budget (set in training)
        self._logged: Optional[int] = None  # the length last logged at INFO level
        self._start_iter, self._last = 0, None  # first iteration of this (re)start, last clock
        self._step_seconds, self._steps_timed = 0.0, 0  # the pace: seconds of timed steps
        self._evals_seen = 0  # evaluations already taken out of the step times
        self.schedule: Optional[FittedSchedule] = None

    # ------------------------------------------------------------------ timing
    def before_train(self) -> None:
        self._start = self._clock() - self._used_before
        self._start_iter = self.trainer.iter
        self._last = None
        self._step_seconds, self._steps_timed = 0.0, 0
        self._evals_seen = len(self._eval_hook.eval_seconds)
        if self._restored is not None and self._restored[1] is not None:
            self._apply(*self._restored)

    def elapsed(self) -> float:
        """Seconds of the budget used so far (before training: those of a resumed run)."""
        return self._used_before if self._start is None else self._clock() - self._start

    def after_step(self) -> None:
        now = self._clock()
        next_iter = self.trainer.iter + 1
        evals = self._eval_hook.eval_seconds[self._evals_seen:]
        self._evals_seen = len(self._eval_hook.eval_seconds)
        if self._last is not None and next_iter - self._start_iter > WARM_ITERS:
            self._step_seconds += max(0.0, now - self._last - sum(evals))
            self._steps_timed += 1
        self._last = now
        if next_iter >= self.trainer.max_iter:  # the last iteration: its checkpoint is written
            return
        if self._steps_timed and (evals or (next_iter - self._start_iter) % self._fit_period == 0):
            self._fit(next_iter, now - self._start)

    def _fit(self, next_iter: int, elapsed: float) -> None:
        pace = self._step_seconds / self._steps_timed
        done = self._eval_hook.eval_seconds
        per_eval = sum(done) / len(done) if done else 0.0
        sol = self._cfg.SOLVER
        fitted = fit_schedule(
            self._budget, elapsed, next_iter, pace, per_eval, sol.MAX_ITER, sol.STEPS,
            self._cfg.TEST.EVAL_PERIOD, self._eval_hook.periodic_done,
        )
        max_iter = comm.all_gather(fitted.max_iter)[0]  # every process trains rank 0's length
        if max_iter != self.trainer.max_iter:
            self._apply(max_iter)
            # the first fit and changes of 1% or more since the last one logged; the rest quietly
            big = self._logged is None or abs(max_iter - self._logged) >= 0.01 * self._logged
            if big:
                self._logged = max_iter
            logger.log(
                logging.INFO if big else logging.DEBUG,
                f"Time budget {self._budget:.0f} s: {elapsed:.0f} s used after {next_iter} "
                f"iterations ({pace:.4f} s each, {per_eval:.1f} s per evaluation): schedule "
                f"fitted to {max_iter} iterations (LR steps {list(self.schedule.steps)}, "
                f"evaluation period {self.schedule.eval_period})."
            )

    # ------------------------------------------------------------------ schedule
    def _apply(self, max_iter: int, steps: Optional[Sequence[int]] = None) -> None:
        """Make ``max_iter`` the trainer's length: LR steps (``steps``, else scaled; an LR
        step the training has reached stays where it was), evaluation period and final
        checkpoint moved with it, the LR scheduler rebuilt at the current iteration."""
        sol, trainer = self._cfg.SOLVER, self.trainer
        last_epoch = trainer.scheduler.last_epoch  # the iteration the next LR is for
        fitted = scaled_schedule(sol.MAX_ITER, sol.STEPS, self._cfg.TEST.EVAL_PERIOD, max_iter)
        if steps is None and self.schedule is not None:  # steps already reached stay put
            steps = [old if old <= last_epoch else new
                     for old, new in zip(self.schedule.steps, fitted.steps)]
        if steps is not None:
            steps = tuple(max(steps[: k + 1]) for k in range(len(steps)))  # in order
            fitted = FittedSchedule(max_iter, steps, fitted.eval_period)
        self.schedule = fitted
        cfg = self._cfg.clone()
        cfg.defrost()
        cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = max_iter, fitted.steps
        scheduler = trainer.build_lr_scheduler(cfg, trainer.optimizer)
        scheduler.last_epoch = last_epoch - 1
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()  # the learning rate of iteration ``last_epoch``, as before
        trainer.scheduler = scheduler
        trainer.max_iter = max_iter
        self._eval_hook.period = fitted.eval_period
        if self._checkpoint_hook is not None:
            self._checkpoint_hook.max_iter = max_iter

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        steps = list(self.schedule.steps) if self.schedule is not None else None
        return {"seconds_used": self.elapsed(), "max_iter": self.trainer.max_iter,
                "steps": steps}

    def load_state_dict(self, state: dict) -> None:
        self._used_before = float(state["seconds_used"])
        self._restored = (int(state["max_iter"]), state["steps"])


def train_adjustable(trainer, start_iter: int, max_iter: int) -> None:
    """Detectron2's ``TrainerBase.train(start_iter, max_iter)``, except that the loop ends when
    ``trainer.iter`` reaches the current ``trainer.max_iter``, which hooks may change."""
    logger.info(f"Starting training from iteration {start_iter}")
    trainer.iter = trainer.start_iter = start_iter
    trainer.max_iter = max_iter
    with EventStorage(start_iter) as trainer.storage:
        try:
            trainer.before_train()
            it = start_iter
            while it < trainer.max_iter:
                trainer.iter = it
                trainer.before_step()
                trainer.run_step()
                trainer.after_step()
                it += 1
            # as in D2: iter == max_iter tells after_train that training finished
            trainer.iter = it if it > start_iter else start_iter + 1
        except Exception:
            logger.exception("Exception during training:")
            raise
        finally:
            trainer.after_train()
