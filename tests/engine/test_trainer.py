"""The Trainer uses Detectron2's public API only: its checkpoint hook follows
``trainer.checkpointer``, dead loader workers are found through its own loader wrapper, and its
source reads no private attribute of DefaultTrainer."""
from __future__ import annotations

import ast
import os
import signal
import time
from types import SimpleNamespace

import pytest
from detectron2.engine.hooks import PeriodicCheckpointer
from torch.utils.data import DataLoader

from knet_d2.engine.hooks import TrainerCheckpointHook
from knet_d2.engine.resumable_sampler import ResumableTrainingSampler, resumable_sampler_of
from knet_d2.engine.worker_failure import WatchedLoader, dead_workers, worker_failure_message
from tests.helpers.paths import REPO_ROOT


class _Saves:
    """A checkpointer stand-in recording what it saved."""

    path_manager = None

    def __init__(self):
        self.saved = []

    def save(self, name, **kwargs):
        self.saved.append(name)


def test_checkpoint_hook_saves_through_the_trainer_checkpointer():
    first, replaced = _Saves(), _Saves()
    kept = TrainerCheckpointHook.replacing(PeriodicCheckpointer(first, 3, max_to_keep=4))
    assert (kept.period, kept.max_to_keep, kept.file_prefix) == (3, 4, "model")
    d2_hook = PeriodicCheckpointer(first, 2, max_iter=5, file_prefix="ckpt")
    hook = TrainerCheckpointHook.replacing(d2_hook)
    assert (hook.period, hook.max_iter, hook.max_to_keep, hook.file_prefix) == (2, 5, None, "ckpt")
    assert hook.checkpointer is first  # not registered yet
    hook.trainer = SimpleNamespace(checkpointer=first, max_iter=5, iter=1)
    hook.trainer.checkpointer = replaced  # what Trainer.__init__ does after D2 built the hooks
    hook.before_train()
    hook.after_step()
    assert hook.checkpointer is replaced
    assert replaced.saved == ["ckpt_0000001"] and first.saved == []


def test_watched_loader_names_a_killed_worker():
    loader = WatchedLoader(DataLoader(list(range(64)), batch_size=2, num_workers=1,
                                      collate_fn=lambda b: b))
    assert loader.iterator is None and len(loader) == 32
    it = iter(loader)
    next(it)
    assert loader.iterator is it
    (worker,) = it._workers
    os.kill(worker.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while worker.exitcode is None and time.time() < deadline:
        try:  # torch's SIGCHLD handler raises its own error here too
            time.sleep(0.05)
        except RuntimeError as e:
            assert f"pid {worker.pid}" in str(e)
    assert dead_workers(loader.iterator) == [f"pid {worker.pid}, killed by SIGKILL"]
    message = worker_failure_message(7, ConnectionResetError("reset"), loader.iterator)
    assert message.startswith(f"Data-loader worker process (pid {worker.pid}, killed by SIGKILL) "
                              "died during training iteration 7 (ConnectionResetError: reset)")
    del it
    loader.iterator = None  # shuts the loader down


def test_resumable_sampler_is_found_inside_the_wrapper():
    sampler = ResumableTrainingSampler(8, 2, seed=1)
    loader = DataLoader(list(range(8)), sampler=sampler, batch_size=None)
    assert resumable_sampler_of(WatchedLoader(loader)) is sampler
    assert resumable_sampler_of(loader) is sampler
    assert resumable_sampler_of(WatchedLoader(DataLoader(list(range(8))))) is None


@pytest.mark.parametrize("private", ["_trainer", "_data_loader_iter_obj", "_hooks"])
def test_trainer_reads_no_private_d2_attribute(private):
    path = REPO_ROOT / "knet_d2/engine/trainer.py"
    tree = ast.parse(path.read_text())
    uses = [n.lineno for n in ast.walk(tree)
            if (isinstance(n, ast.Attribute) and n.attr == private)
            or (isinstance(n, ast.Constant) and n.value == private)]
    assert uses == [], f"{path.name} uses {private} at lines {uses}"
