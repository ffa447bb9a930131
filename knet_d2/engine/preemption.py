"""Stop training cleanly when the scheduler asks: one checkpoint, then a distinct exit code.

SLURM sends ``SIGTERM`` before it preempts or cancels a job, and ``sbatch --signal=USR1@<s>``
sends ``SIGUSR1`` ``<s>`` seconds before the time limit; ``torchrun`` passes a ``SIGTERM`` it
receives on to its workers. :class:`PreemptionHook` catches the signals named in
``cfg.PREEMPTION.SIGNALS``:

1. the signal handler only records the signal; the current iteration runs to its end;
2. after every step the ranks agree (an all-reduce of the flags), so all stop after the same
   iteration even when only one process was signalled;
3. the trainer's checkpointer writes ``model_<iter>.pth`` atomically (main process) and tags it
   in ``last_checkpoint``; every rank waits for the write;
4. every process exits with :data:`PREEMPTED_EXIT_CODE` (75, ``EX_TEMPFAIL``: "try again"), which
   a job script turns into ``scontrol requeue``; ``--resume`` continues after that iteration.

Processes forked while the handlers are installed inherit them. Data-loader workers must: a
scheduler may signal every process of the job, and a worker killed by it would stop the
training before its checkpoint. A child that should end on the signal (an evaluator's
``multiprocessing`` pool, ended by ``Pool.terminate()`` with ``SIGTERM``) leaves the handler at
once, but a signal that reaches it in the instant after ``fork()``, before Python has set up the
child, is lost, and the pool then waits for that worker for ever (panopticapi's ``pq_compute``
ends its pool this way after every evaluation). So evaluation runs inside
:func:`children_take_default_signals`: processes forked meanwhile start with the default action
for the preemption signals, with the signals blocked across the ``fork()`` so that none is lost.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Set

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch.utils.data import get_worker_info

__all__ = [
    "PREEMPTED_EXIT_CODE", "TrainingPreempted", "PreemptionHook", "signal_numbers",
    "children_take_default_signals",
]

logger = logging.getLogger(__name__)

#: exit code of a training process stopped by a preemption signal after saving a checkpoint
PREEMPTED_EXIT_CODE = 75


class TrainingPreempted(SystemExit):
    """Raised (exit code :data:`PREEMPTED_EXIT_CODE`) after the preemption checkpoint is saved."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)


def signal_numbers(names: Sequence[str]) -> list:
    """``["SIGTERM", "USR1"]`` -> ``[signal.SIGTERM, signal.SIGUSR1]``; unknown names raise
    ``ValueError`` naming ``PREEMPTION.SIGNALS``."""
    numbers = []
    for name in names:
        full = name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()
        number = signal.Signals.__members__.get(full)
        if number is None or full in ("SIGKILL", "SIGSTOP"):
            raise ValueError(
                f"PREEMPTION.SIGNALS: {name!r} is not a signal that can be caught here "
                "(use names such as SIGTERM, SIGUSR1, SIGUSR2, SIGINT)"
            )
        numbers.append(number)
    return numbers


#: the signals a PreemptionHook of this process currently handles
_HANDLED: Set[int] = set()
#: the signals that processes forked now start with at their default action
_CHILD_DEFAULTS: Set[int] = set()


def _block_before_fork() -> None:
    if _CHILD_DEFAULTS:
        signal.pthread_sigmask(signal.SIG_BLOCK, _CHILD_DEFAULTS)


def _unblock_in_parent() -> None:
    if _CHILD_DEFAULTS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CHILD_DEFAULTS)


def _default_then_unblock_in_child() -> None:
    if _CHILD_DEFAULTS:
        for s in _CHILD_DEFAULTS:
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _CHILD_DEFAULTS)  # a pending one acts now
        _CHILD_DEFAULTS.clear()
        _HANDLED.clear()


if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):
    os.register_at_fork(before=_block_before_fork, after_in_parent=_unblock_in_parent,
                        after_in_child=_default_then_unblock_in_child)


@contextmanager
def children_take_default_signals() -> Iterator[None]:
    """Inside the block, processes forked by this one start with the default action for the
    signals a :class:`PreemptionHook` handles here (none: no effect). The signals are blocked
    in the forking thread across ``fork()``, so one sent to the new process at once ends it
    instead of being lost (module docstring). Used around evaluation during training."""
    previous = set(_CHILD_DEFAULTS)
    _CHILD_DEFAULTS.update(_HANDLED)
    try:
        yield
    finally:
        _CHILD_DEFAULTS.clear()
        _CHILD_DEFAULTS.update(previous)


class PreemptionHook(HookBase):
    """Save a checkpoint and exit with :data:`PREEMPTED_EXIT_CODE` after the iteration during
    which one of ``signals`` reached any rank (see the module docstring).

    The handlers are installed in ``before_train`` (before the data-loader workers are forked,
    so that they inherit the harmless handler instead of dying from the signal) and the previous
    handlers restored in ``after_train``.
    """

    def __init__(self, signals: Sequence[str]):
        self._signals = signal_numbers(signals)
        self._received: Optional[int] = None
        self._previous: dict = {}
        self._pid = os.getpid()

    def _record(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:  # a forked child inherited the handler
            if get_worker_info() is not None:
                return  # a data-loader worker: the training process decides, then ends it
            # Any other child (e.g. an evaluator's multiprocessing pool, which ends its workers
            # with SIGTERM): the default action.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self._received is None:
            self._received = signum

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training runs outside the main thread: preemption signals are not "
                           "handled (signal handlers can only be set in the main thread).")
            return
        self._pid = os.getpid()
        for s in self._signals:
            self._previous[s] = signal.signal(s, self._record)
        _HANDLED.update(self._signals)

    def after_train(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
            _HANDLED.discard(s)
        self._previous = {}

    def _agreed_signal(self) -> int:
        """The largest signal number any rank received (0: none)."""
        mine = self._received or 0
        if comm.get_world_size() == 1:
            return mine
        device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
        flag = torch.tensor([mine], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def after_step(self) -> None:
        signum = self._agreed_signal()
        if not signum:
            return
        it = self.trainer.iter
        name = signal.Signals(signum).name
        where = "this process" if self._received == signum else "another process"
        logger.warning(f"{name} received by {where}: iteration {it} is complete; saving a "
                       "checkpoint before stopping.")
        self.trainer.checkpointer.save(f"model_{it:07d}", iteration=it)
        comm.synchronize()  # no rank exits before the checkpoint is on disk
        logger.warning(
            f"Preempted by {name} after iteration {it}: checkpoint model_{it:07d}.pth saved in "
            f"{self.trainer.checkpointer.save_dir}; exiting with code {PREEMPTED_EXIT_CODE}. "
            f"Continue with --resume (from iteration {it + 1})."
        )
        raise TrainingPreempted()
