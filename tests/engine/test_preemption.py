"""knet_d2.engine.preemption: processes forked during evaluation take the default action for the
preemption signals, so that an evaluator's pool ends when it is terminated (the whole hook is
exercised with real launches in test_cluster_launch.py)."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from knet_d2.engine import preemption
from knet_d2.engine.preemption import PreemptionHook, children_take_default_signals
from tests.helpers.paths import REPO_ROOT, load_config
from tests.helpers.requirements import skip_or_fail


def _report_disposition(queue) -> None:
    queue.put(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)


@pytest.fixture
def installed_hook():
    if not hasattr(os, "register_at_fork"):
        skip_or_fail("needs os.fork (POSIX)")
    hook = PreemptionHook(["SIGTERM", "SIGUSR1"])
    hook.before_train()
    try:
        yield hook
    finally:
        hook.after_train()


def _child_has_default_sigterm() -> bool:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_report_disposition, args=(queue,))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    return result


def test_children_forked_during_evaluation_take_the_default_action(installed_hook):
    assert signal.getsignal(signal.SIGTERM) == installed_hook._record
    assert _child_has_default_sigterm() is False  # training: a data-loader worker keeps it
    with children_take_default_signals():
        assert _child_has_default_sigterm() is True
        # the parent keeps its handler, and the signals are not left blocked in it
        assert signal.getsignal(signal.SIGTERM) == installed_hook._record
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert _child_has_default_sigterm() is False
    assert not preemption._CHILD_DEFAULTS


def test_without_a_hook_the_block_changes_nothing():
    assert not preemption._HANDLED
    with children_take_default_signals():
        assert not preemption._CHILD_DEFAULTS


def test_evaluator_pool_ends_after_every_evaluation():
    """panopticapi's pq_compute leaves its pool to the finaliser, which terminates the workers
    with SIGTERM right after their tasks; a worker that had only just been forked used to lose
    that signal under the hook's handler and hang the training (within some tens of pools)."""
    if not hasattr(os, "register_at_fork"):
        skip_or_fail("needs os.fork (POSIX)")
    code = textwrap.dedent(
        """
        import multiprocessing
        from knet_d2.engine.preemption import PreemptionHook, children_take_default_signals

        def work(i):
            return i

        def evaluate():
            pool = multiprocessing.get_context("fork").Pool(processes=2)
            return [r.get() for r in [pool.apply_async(work, (i,)) for i in range(2)]]

        PreemptionHook(["SIGTERM", "SIGUSR1"]).before_train()
        with children_take_default_signals():
            for _ in range(300):
                assert evaluate() == [0, 1]
        print("done")
        """
    )
    try:
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("an evaluator's pool hung: a worker did not end on Pool.terminate()")
    assert run.returncode == 0 and "done" in run.stdout, run.stderr[-2000:]


def test_trainer_evaluates_with_default_signals_in_children(monkeypatch, installed_hook):
    from detectron2.engine import DefaultTrainer

    from knet_d2.engine.trainer import Trainer
    seen = []
    monkeypatch.setattr(DefaultTrainer, "test", classmethod(
        lambda cls, cfg, model, evaluators=None: seen.append(set(preemption._CHILD_DEFAULTS))))
    cfg = load_config(REPO_ROOT / "configs/synthetic/instance/knet_R18_tiny.yaml")
    Trainer.test(cfg, torch.nn.Linear(1, 1))
    assert seen == [{signal.SIGTERM, signal.SIGUSR1}]
    assert not preemption._CHILD_DEFAULTS
