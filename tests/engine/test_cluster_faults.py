"""Launcher detection, start-up errors and faults around checkpoints (no multi-process training):
torchrun / SLURM environments, GPUs that are not there, two runs on one OUTPUT_DIR, a corrupt
``last_checkpoint`` target, a full disk during a save, a killed data-loader worker, and a
preemption signal in a 1-process run."""
from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from argparse import Namespace

import pytest
import torch
from torch import nn

from knet_d2.engine.checkpointer import CorruptCheckpointError, KNetCheckpointer
from knet_d2.engine.launch import (
    LaunchError,
    check_devices,
    detect_launch_env,
    first_host,
    launch_training,
    tasks_per_node,
)
from knet_d2.engine.output_lock import OutputDirInUseError, lock_output_dir
from knet_d2.engine.preemption import PREEMPTED_EXIT_CODE, signal_numbers
from tests.helpers.paths import REPO_ROOT

CONFIG = REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml"


@pytest.fixture
def no_gpu(monkeypatch):
    """This process and its children see no GPU, also on a machine that has some."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


# ------------------------------------------------------------------------------- launchers
def test_torchrun_environment_is_detected():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    e = detect_launch_env(env)
    assert (e.launcher, e.rank, e.world_size, e.local_rank) == ("torchrun", 3, 4, 1)
    assert (e.num_machines, e.machine_rank, e.init_method) == (2, 1, "env://")
    with pytest.raises(LaunchError, match="LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not"):
        detect_launch_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert detect_launch_env({"PATH": "/bin"}) is None


def test_slurm_environment_is_detected():
    env = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
           "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NODELIST": "gpu[07-08]",
           "SLURM_JOB_ID": "123456"}
    e = detect_launch_env(env)
    assert (e.launcher, e.rank, e.world_size, e.local_rank, e.local_world_size) == (
        "slurm", 5, 8, 1, 4)
    assert e.machine_rank == 1 and e.init_method == f"tcp://gpu07:{20000 + 123456 % 20000}"
    e = detect_launch_env(dict(env, MASTER_ADDR="head", MASTER_PORT="1234"))
    assert e.init_method == "tcp://head:1234"
    # srun with one task: D2's launch() spawns --num-gpus processes as usual.
    assert detect_launch_env(dict(env, SLURM_STEP_NUM_TASKS="1")) is None
    with pytest.raises(LaunchError, match="not the same on every node"):
        detect_launch_env(dict(env, SLURM_STEP_NUM_TASKS="7", SLURM_STEP_TASKS_PER_NODE="4,3"))


def test_slurm_list_parsing():
    assert tasks_per_node("4(x2),3") == [4, 4, 3]
    assert first_host("gpu[07-09,12],cpu1") == "gpu07"
    assert first_host("node5,node6") == "node5"


def test_launcher_and_d2_flags_together_are_refused(monkeypatch):
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    args = Namespace(num_gpus=2, num_machines=1, machine_rank=0, dist_url="auto")
    with pytest.raises(LaunchError, match=r"started by torchrun .* drop --num-gpus 2"):
        launch_training(lambda a: None, args, device="cpu")


def test_gpus_that_are_not_there_are_refused(no_gpu):
    with pytest.raises(LaunchError, match=r"--num-gpus 2 asks for 2 GPUs .*torchrun"):
        check_devices("cpu", 2)
    with pytest.raises(LaunchError, match=r"MODEL.DEVICE is 'cuda'.*MODEL.DEVICE cpu"):
        check_devices("cuda", 1)
    check_devices("cpu", 1)


def test_train_net_num_gpus_without_gpus_fails_before_building(tmp_path, no_gpu):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", str(CONFIG), "--num-gpus", "2",
         "OUTPUT_DIR", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )
    assert proc.returncode != 0
    assert "train_net.py: --num-gpus 2 asks for 2 GPUs" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()  # nothing built or written


def test_preemption_signal_names():
    assert signal_numbers(["SIGTERM", "usr1"]) == [signal.SIGTERM, signal.SIGUSR1]
    with pytest.raises(ValueError, match="PREEMPTION.SIGNALS: 'SIGKILL'"):
        signal_numbers(["SIGKILL"])


# ------------------------------------------------------------------------------- OUTPUT_DIR
_HOLD_LOCK = (
    "import sys, time\n"
    "from knet_d2.engine.output_lock import lock_output_dir\n"
    "lock_output_dir(sys.argv[1]); print('locked', flush=True); time.sleep(60)\n"
)


def test_second_training_run_on_one_output_dir_is_refused(tmp_path):
    from detectron2.engine import default_argument_parser

    import train_net

    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                              env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirInUseError, match=rf"pid {holder.pid} on host"):
            lock_output_dir(str(tmp_path))
        args = default_argument_parser().parse_args(
            ["--config-file", str(CONFIG), "OUTPUT_DIR", str(tmp_path)])
        with pytest.raises(SystemExit, match="is in use by another training run"):
            train_net.setup(args)
        assert not (tmp_path / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert lock_output_dir(str(tmp_path)) is not None  # released when the holder died


# ------------------------------------------------------------------------------- checkpoints
def _checkpointer(save_dir, value=0.0):
    model = nn.Linear(3, 2)
    nn.init.constant_(model.weight, value)
    return KNetCheckpointer(model, save_dir=str(save_dir))


def test_resume_skips_a_corrupt_last_checkpoint_naming_it(tmp_path, caplog):
    for it in (1, 2, 3):
        _checkpointer(tmp_path, float(it)).save(f"model_{it:07d}", iteration=it)
        os.utime(tmp_path / f"model_{it:07d}.pth", (it, it))  # written in this order
    bad = tmp_path / "model_0000003.pth"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    ckpt = _checkpointer(tmp_path)
    with caplog.at_level(logging.WARNING):
        data = ckpt.resume_or_load("", resume=True)
    assert data["iteration"] == 2 and float(ckpt.model.weight[0, 0]) == 2.0
    assert f"{bad}, which cannot be read; resumed from {tmp_path / 'model_0000002.pth'}" in (
        caplog.text)
    # Nothing readable at all: an error naming the files, never a silent start from scratch.
    for it in (1, 2):
        (tmp_path / f"model_{it:07d}.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match=r"no readable checkpoint .*model_0000003"):
        _checkpointer(tmp_path).resume_or_load("", resume=True)


class _FullDiskFile:
    """A file object that accepts ``capacity`` bytes, then fails like a full disk."""

    def __init__(self, f, capacity):
        self._f, self._left = f, capacity

    def write(self, data):
        if len(data) > self._left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_disk_full_during_save_names_directory_and_keeps_previous(tmp_path, monkeypatch):
    ckpt = _checkpointer(tmp_path, 1.0)
    ckpt.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FullDiskFile(real_fdopen(fd, mode), 200))
    with pytest.raises(OSError) as err:
        _checkpointer(tmp_path, 2.0).save("model_0000002", iteration=2)
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    msg = str(err.value)
    assert f"No space left on the device of {tmp_path} (" in msg and "MiB free" in msg
    assert "model_0000002.pth" in msg
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]


# ------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets
    from tests.helpers.tiny_training import register_tiny

    root = tmp_path_factory.mktemp("faults_data")
    ensure_synthetic_for_datasets([register_tiny(root)])
    return root


def _trainer(data_root, out, max_iter, workers, hook):
    from detectron2.engine import HookBase

    import train_net
    from tests.helpers.paths import load_config
    from tests.helpers.tiny_training import register_tiny, tiny_train_opts

    register_tiny(data_root)
    cfg = load_config(CONFIG, tiny_train_opts(out, max_iter=max_iter, period=100,
                                              workers=workers))
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    trainer.register_hooks([type("TestHook", (HookBase,), {"before_step": hook})()])
    return trainer


def test_killed_data_loader_worker_is_named(data_root, tmp_path):
    killed = []
    # child processes an earlier test of this process left running are not the loader's workers
    earlier = {p.pid for p in multiprocessing.active_children()}

    def kill_worker(hook):
        if hook.trainer.iter == 2 and not killed:
            workers = [p for p in multiprocessing.active_children() if p.pid not in earlier]
            assert workers
            killed.append(workers[0].pid)
            os.kill(workers[0].pid, signal.SIGKILL)

    trainer = _trainer(data_root, tmp_path, 8, 1, kill_worker)
    trainer.resume_or_load(resume=False)
    with pytest.raises(RuntimeError) as err:
        trainer.train()
    msg = str(err.value)
    assert f"Data-loader worker process (pid {killed[0]}" in msg
    assert "died during training iteration" in msg
    assert "DATALOADER.NUM_WORKERS" in msg and "--resume" in msg


def test_preemption_signal_saves_checkpoint_and_exits_75(data_root, tmp_path):
    def signal_self(hook):
        if hook.trainer.iter == 2:
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives during iteration 2

    before = signal.getsignal(signal.SIGUSR1)
    trainer = _trainer(data_root, tmp_path, 6, 0, signal_self)
    trainer.resume_or_load(resume=False)
    with pytest.raises(SystemExit) as exit_info:
        trainer.train()
    assert exit_info.value.code == PREEMPTED_EXIT_CODE
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers restored
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert saved["iteration"] == 2
    resumed = _trainer(data_root, tmp_path, 6, 0, lambda hook: None)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
