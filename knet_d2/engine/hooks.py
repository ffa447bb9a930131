"""Training-loop helpers: per-iteration RNG seeding, the checkpoint hook that saves through the
trainer's checkpointer, and the non-finite loss report."""
from __future__ import annotations

import math
import random
from typing import Callable, Dict, Mapping, Optional

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.engine.hooks import PeriodicCheckpointer
from detectron2.utils import comm
from torch import nn

from .resumable_sampler import STREAM_MODEL, derive_seed

__all__ = [
    "IterationRNGHook", "TrainerCheckpointHook", "LossCapture", "non_finite_loss_message",
]


class IterationRNGHook(HookBase):
    """Before every step, seed ``random``, numpy and torch (CPU and CUDA) from
    ``(seed, rank, iteration)``.

    Dropout / drop-path masks of iteration ``i`` then do not depend on what ran before, so a
    resumed run draws the same masks as the uninterrupted one. ``seed`` is read at every step
    (a callable), so a seed restored from a checkpoint takes effect.
    """

    def __init__(self, seed: Callable[[], int]):
        self._seed = seed

    def before_step(self) -> None:
        s = derive_seed(self._seed(), STREAM_MODEL, comm.get_rank(), self.trainer.iter)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)


class TrainerCheckpointHook(PeriodicCheckpointer):
    """D2's ``PeriodicCheckpointer`` hook that always saves through ``trainer.checkpointer``, so
    a trainer may set its own checkpointer after ``DefaultTrainer.__init__`` built the hooks."""

    @classmethod
    def replacing(cls, hook: PeriodicCheckpointer) -> TrainerCheckpointHook:
        """The same schedule as ``hook`` (period, max_iter, max_to_keep, file prefix)."""
        return cls(
            hook.checkpointer, hook.period, max_iter=hook.max_iter,
            max_to_keep=hook.max_to_keep, file_prefix=hook.file_prefix,
        )

    @property
    def checkpointer(self):
        """The registered trainer's ``checkpointer`` (before registration: the one given)."""
        return self._given if self.trainer is None else self.trainer.checkpointer

    @checkpointer.setter
    def checkpointer(self, checkpointer) -> None:
        self._given = checkpointer


class LossCapture:
    """Keep (detached) the loss dict of the last training forward of ``model``.

    A forward hook that stores references only (no device sync); :func:`non_finite_loss_message`
    reads it when D2 reports a non-finite loss.
    """

    def __init__(self, model: nn.Module):
        self.last: Optional[Dict[str, torch.Tensor]] = None
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output) -> None:
        if module.training and isinstance(output, Mapping):
            self.last = {
                k: v.detach() for k, v in output.items() if isinstance(v, torch.Tensor)
            }

    def remove(self) -> None:
        self._handle.remove()


def non_finite_loss_message(iteration: int, loss_dict: Optional[Mapping[str, torch.Tensor]]) -> str:
    """Explain a non-finite loss at ``iteration``, naming the NaN/Inf terms of ``loss_dict``
    (this process's losses of that iteration)."""
    values = {k: float(v.float().sum()) for k, v in (loss_dict or {}).items()}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        ok = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in bad)
        what = f"non-finite loss terms: {terms} (finite: {ok or 'none'})"
    else:
        what = (
            "the non-finite value came from another process (this process's terms are finite: "
            + ", ".join(f"{k}={v:.4g}" for k, v in values.items()) + ")"
        )
    return (
        f"Loss became NaN or Inf at iteration {iteration}: {what}. Training stopped before the "
        "optimizer step of this iteration, so the checkpoints in OUTPUT_DIR are unaffected "
        "(continue with --resume from the last one). Usual causes: a learning rate too high "
        "(SOLVER.BASE_LR, SOLVER.WARMUP_ITERS), gradient clipping off (SOLVER.CLIP_GRADIENTS), "
        "a loss weight set to NaN/Inf, or a bad annotation in this batch."
    )
