"""Training killed with SIGKILL resumes with ``--resume`` and reproduces the uninterrupted run.

The end-to-end tests run ``train_net.main`` in subprocesses (this file is also the driver
script, see ``_driver``) on a tiny synthetic split: run A trains 10 iterations uninterrupted;
run B is killed mid-iteration (or while a checkpoint is being written) and resumed. With
``EXACT_RESUME`` (default) every iteration's ``total_loss`` of the resumed run equals run A's.
Also here: unit tests of the resumable sampler / seeded mapping, and the non-finite loss stop.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny_training import CONFIG, MAX_ITER, register_tiny, tiny_train_opts


# ------------------------------------------------------------------------------- driver
def _driver(argv) -> None:
    """``python tests/engine/test_resume.py --out DIR --data DIR [--resume] [--kill-at-iter K]
    [--kill-before-replace FILE]``: train_net.main plus a hook appending each iteration's
    total_loss to OUT/losses.jsonl, and optional SIGKILLs of itself."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-at-iter", type=int, default=-1)
    ap.add_argument("--kill-before-replace", default="")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from detectron2.engine import HookBase, default_argument_parser

    import train_net

    register_tiny(a.data)

    class RecordLoss(HookBase):
        def after_step(self):
            loss = self.trainer.storage.history("total_loss").latest()
            with open(os.path.join(a.out, "losses.jsonl"), "a") as f:
                f.write(json.dumps({"iter": self.trainer.iter, "total_loss": loss}) + "\n")

    build_hooks, init = train_net.Trainer.build_hooks, train_net.Trainer.__init__

    def patched_build_hooks(self):
        return build_hooks(self) + [RecordLoss()]

    def patched_init(self, cfg):
        init(self, cfg)

        def kill_mid_iteration(module, inputs):  # during the forward of iteration K
            if module.training and self.iter == a.kill_at_iter:
                os.kill(os.getpid(), signal.SIGKILL)

        self.model.register_forward_pre_hook(kill_mid_iteration)

    train_net.Trainer.build_hooks = patched_build_hooks
    train_net.Trainer.__init__ = patched_init
    if a.kill_before_replace:  # the temp file is complete, the rename has not happened
        real_replace = os.replace

        def replace(src, dst):
            if os.path.basename(dst) == a.kill_before_replace:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        os.replace = replace
    args = default_argument_parser().parse_args(
        ["--config-file", str(CONFIG)] + (["--resume"] if a.resume else [])
        + tiny_train_opts(a.out)
    )
    train_net.main(args)


def _run(out, data, *extra) -> subprocess.CompletedProcess:
    # the driver imports train_net from the repository root (a script's path is its own folder)
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path)
    return subprocess.run(
        [sys.executable, __file__, "--out", str(out), "--data", str(data), *map(str, extra)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def _losses(out) -> dict:
    """iteration -> total_loss; later lines (the resumed run) win."""
    rows = [json.loads(x) for x in (Path(out) / "losses.jsonl").read_text().splitlines()]
    return {r["iter"]: r["total_loss"] for r in rows}


def _assert_same_losses(got: dict, want: dict, iters) -> None:
    for i in iters:
        assert i in got, f"iteration {i} missing: {sorted(got)}"
        assert abs(got[i] - want[i]) <= 1e-6 * max(1.0, abs(want[i])), (i, got[i], want[i])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """The 8-image 64 px split, generated once here so the subprocesses only read it."""
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets

    root = tmp_path_factory.mktemp("resume_data")
    ensure_synthetic_for_datasets([register_tiny(root)])
    return root


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_a")
    proc = _run(out, data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(out)
    assert sorted(losses) == list(range(MAX_ITER))
    return losses


def test_sigkill_mid_iteration_then_resume_reproduces_losses(data_root, uninterrupted, tmp_path):
    killed = _run(tmp_path, data_root, "--kill-at-iter", 7)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    assert sorted(_losses(tmp_path)) == list(range(7))  # died inside iteration 7

    resumed = _run(tmp_path, data_root, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting training from iteration 6" in resumed.stderr + resumed.stdout
    _assert_same_losses(_losses(tmp_path), uninterrupted, range(MAX_ITER))
    assert (tmp_path / "model_final.pth").is_file()
    # The new run's checkpoints hold only what torch.load(weights_only=True) accepts.
    ckpt = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == MAX_ITER - 1 and ckpt["data_sampler"] == {"seed": 3}


def test_sigkill_during_checkpoint_write_resumes_from_previous(data_root, uninterrupted, tmp_path):
    killed = _run(tmp_path, data_root, "--kill-before-replace", "model_0000005.pth")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    temps = list(tmp_path.glob(".model_0000005.pth.*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size > 0
    assert not (tmp_path / "model_0000005.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"

    resumed = _run(tmp_path, data_root, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr + resumed.stdout
    assert "Starting training from iteration 3" in log
    assert "interrupted" in log and temps[0].name in log  # the warning names the removed file
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    _assert_same_losses(_losses(tmp_path), uninterrupted, range(MAX_ITER))


# ------------------------------------------------------------------------------- non-finite
def test_non_finite_loss_stops_naming_iteration_and_terms(data_root, tmp_path):
    import train_net
    from tests.helpers.paths import load_config

    register_tiny(data_root)
    cfg = load_config(CONFIG, tiny_train_opts(tmp_path, max_iter=4, period=1, workers=0))
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)

    def poison(module, inputs, losses):  # two loss terms of iteration 2 become NaN / Inf
        if trainer.iter == 2:
            losses = dict(losses)
            losses["s0_loss_dice"] = losses["s0_loss_dice"] * float("nan")
            losses["loss_rpn_mask"] = losses["loss_rpn_mask"] + float("inf")
        return losses

    trainer.model.criterion.register_forward_hook(poison)
    with pytest.raises(FloatingPointError) as err:
        trainer.train()
    msg = str(err.value)
    assert "iteration 2" in msg
    bad, finite = msg.split("(finite:")
    assert "s0_loss_dice=nan" in bad and "loss_rpn_mask=inf" in bad
    assert "s1_loss_dice" not in bad and "s1_loss_dice=" in finite
    # Iterations 0 and 1 were checkpointed; nothing was written for the failed iteration.
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000002.pth").exists()


# ------------------------------------------------------------------------------- unit level
def _take(sampler, n):
    return list(islice(iter(sampler), n))


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("world", [1, 2])
def test_sampler_start_iter_continues_the_stream(grouped, world):
    from knet_d2.engine import ResumableTrainingSampler

    n = 13
    groups = np.arange(n) % 3 == 0 if grouped else None
    for rank in range(world):
        kw = dict(seed=5, group_ids=groups, rank=rank, world_size=world)
        full = _take(ResumableTrainingSampler(n, 3, **kw), 20)
        for start in (1, 4, 11):
            s = ResumableTrainingSampler(n, 3, **kw)
            s.set_start_iter(start)
            assert _take(s, 20 - start) == full[start:]
        if grouped:
            for batch in full:
                assert len({bool(groups[i]) for _, i in batch}) == 1


def test_sampler_ranks_split_each_epoch_and_seed_changes_order():
    from knet_d2.engine import ResumableTrainingSampler

    n, b, world = 12, 3, 2
    epoch0 = []
    for rank in range(world):
        s = ResumableTrainingSampler(n, b, seed=1, rank=rank, world_size=world)
        epoch0 += [i for batch in _take(s, n // world // b) for _, i in batch]
    assert sorted(epoch0) == list(range(n))  # every image exactly once per epoch
    s1 = ResumableTrainingSampler(n, b, seed=1, rank=0, world_size=1)
    s2 = ResumableTrainingSampler(n, b, seed=2, rank=0, world_size=1)
    assert _take(s1, 4) != _take(s2, 4)
    s2.load_state_dict(s1.state_dict())
    assert _take(s1, 4) == _take(s2, 4)
    # per-sample seeds are distinct
    seeds = [seed for batch in _take(s1, 8) for seed, _ in batch]
    assert len(set(seeds)) == len(seeds)


def _random_mapper(d):
    if d.get("bad"):
        return None
    return {"id": d["id"], "np": float(np.random.rand()), "torch": float(torch.rand(())),
            "py": random.random()}


def test_seeded_mapping_does_not_depend_on_history_and_restores_rngs():
    from knet_d2.engine import SeededMapDataset

    ds = SeededMapDataset([{"id": i} for i in range(5)], _random_mapper)
    key = [(11, 2), (12, 4)]
    first = ds[key]
    torch.manual_seed(0)
    np.random.seed(0)
    before = (float(torch.rand(())), float(np.random.rand()))
    torch.manual_seed(0)
    np.random.seed(0)
    ds[[(99, 1)]]  # mapping something else in between
    assert ds[key] == first
    assert (float(torch.rand(())), float(np.random.rand())) == before  # global RNGs untouched
    assert first[0] != ds[[(13, 2)]][0]  # another seed, other augmentation


def test_seeded_mapping_replaces_bad_samples_reproducibly():
    from knet_d2.engine import SeededMapDataset

    dicts = [{"id": i, "bad": i == 0} for i in range(6)]
    ds = SeededMapDataset(dicts, _random_mapper)
    out = ds[[(7, 0)]][0]
    assert out["id"] != 0 and ds[[(7, 0)]][0] == out
    with pytest.raises(RuntimeError, match="3 training samples in a row"):
        SeededMapDataset([{"id": 0, "bad": True}], _random_mapper, max_attempts=3)[[(1, 0)]]


def test_train_loader_batches_do_not_depend_on_workers(data_root, tmp_path):
    import train_net
    from knet_d2.engine import resumable_sampler_of
    from tests.helpers.paths import load_config

    register_tiny(data_root)

    def batches(workers, start=0, n=3):
        cfg = load_config(CONFIG, tiny_train_opts(tmp_path, workers=workers))
        loader = train_net.Trainer.build_train_loader(cfg)
        resumable_sampler_of(loader).set_start_iter(start)
        return [
            [(d["file_name"], d["image"].clone()) for d in batch] for batch in islice(loader, n)
        ]

    def same(a, b):
        return len(a) == len(b) and all(
            fa == fb and torch.equal(ia, ib)
            for ba, bb in zip(a, b) for (fa, ia), (fb, ib) in zip(ba, bb)
        )

    ref = batches(0)
    assert same(batches(2), ref)
    assert same(batches(0, start=2, n=1), ref[2:])
    flips = [not torch.equal(i, j) for b in ref for (_, i), (_, j) in zip(b, b[1:])]
    assert any(flips)  # the batches are not all one repeated image


def test_iteration_rng_hook_seeds_by_iteration():
    from types import SimpleNamespace

    from knet_d2.engine import IterationRNGHook

    hook = IterationRNGHook(lambda: 4)
    draws = {}
    for it in (5, 6, 5):
        hook.trainer = SimpleNamespace(iter=it)
        hook.before_step()
        draws.setdefault(it, []).append((float(torch.rand(())), float(np.random.rand())))
    assert draws[5][0] == draws[5][1] and draws[5][0] != draws[6][0]


if __name__ == "__main__":
    _driver(sys.argv[1:])
