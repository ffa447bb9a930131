"""Start training processes the way the cluster started them: D2 ``launch()``, ``torchrun`` or
SLURM ``srun``.

* :func:`detect_launch_env` reads a rendezvous that was set up outside this program:
  ``torchrun`` (and other ``env://`` launchers) export ``RANK`` / ``WORLD_SIZE`` /
  ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT``; ``srun`` exports
  ``SLURM_PROCID`` / ``SLURM_STEP_NUM_TASKS`` / ``SLURM_LOCALID`` / ``SLURM_STEP_TASKS_PER_NODE``
  / ``SLURM_STEP_NODELIST``.
* :func:`run_in_launched_process` then does in the current process what D2's
  ``launch()`` does in each process it spawns: ``init_process_group`` (NCCL with GPUs, else gloo),
  D2's per-machine process group (``comm.create_local_process_group``), the CUDA device of the
  local rank and a first barrier.
* :func:`launch_training` picks one of the two: processes started by a launcher join one process
  group; otherwise D2's ``launch()`` spawns ``--num-gpus`` processes per machine (the
  ``--num-machines / --machine-rank / --dist-url`` flags unchanged).
* :func:`check_devices` refuses GPUs that are not there before anything is built or spawned.

A training run preempted by a signal exits with
:data:`knet_d2.engine.preemption.PREEMPTED_EXIT_CODE`, also through ``launch()``'s spawned
processes (see :func:`launch_training`).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from detectron2.engine import launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm

from .preemption import PREEMPTED_EXIT_CODE, signal_numbers

__all__ = [
    "LaunchError",
    "LaunchEnv",
    "detect_launch_env",
    "check_devices",
    "run_in_launched_process",
    "launch_training",
]

logger = logging.getLogger(__name__)

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                  "MASTER_PORT")


class LaunchError(RuntimeError):
    """The processes cannot be started as asked; the message says what to change."""


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in a job started by an external launcher."""

    launcher: str  # "torchrun" or "slurm"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int  # processes per machine (the same on every machine)
    init_method: str  # for torch.distributed.init_process_group

    @property
    def num_machines(self) -> int:
        return self.world_size // self.local_world_size

    @property
    def machine_rank(self) -> int:
        return self.rank // self.local_world_size


def _int(env: Mapping[str, str], name: str, launcher: str) -> int:
    try:
        return int(env[name])
    except KeyError:
        raise LaunchError(f"{launcher} launch: environment variable {name} is not set") from None
    except ValueError:
        raise LaunchError(
            f"{launcher} launch: environment variable {name}={env[name]!r} is not an integer"
        ) from None


def tasks_per_node(spec: str) -> list:
    """Expand SLURM's compressed task counts: ``"4(x2),3"`` -> ``[4, 4, 3]``."""
    counts = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise LaunchError(f"SLURM launch: cannot parse tasks per node {spec!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: ``"gpu[07-09,12],cpu1"`` -> ``"gpu07"``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise LaunchError(f"SLURM launch: cannot parse node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + re.split(r"[-,]", ranges, maxsplit=1)[0]


def _detect_torchrun(env: Mapping[str, str]) -> Optional[LaunchEnv]:
    present = [v for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if v in env]
    if not present:
        return None
    missing = [v for v in _TORCHRUN_VARS if v not in env]
    if missing:
        raise LaunchError(
            f"this process was started with {', '.join(f'{v}={env[v]}' for v in present)} "
            f"(an env:// launcher such as torchrun) but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set: start it with torchrun, which "
            "sets all of " + ", ".join(_TORCHRUN_VARS) + "."
        )
    world = _int(env, "WORLD_SIZE", "torchrun")
    local_world = _int(env, "LOCAL_WORLD_SIZE", "torchrun")
    if local_world < 1 or world % local_world:
        raise LaunchError(
            f"torchrun launch: WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE="
            f"{local_world}; D2 needs the same number of processes on every machine."
        )
    return LaunchEnv("torchrun", _int(env, "RANK", "torchrun"), world,
                     _int(env, "LOCAL_RANK", "torchrun"), local_world, "env://")


def _detect_slurm(env: Mapping[str, str]) -> Optional[LaunchEnv]:
    # SLURM_STEP_NUM_TASKS is set by srun (not in the batch script itself); one task means one
    # process that may still spawn --num-gpus processes through D2's launch().
    if "SLURM_STEP_NUM_TASKS" not in env or _int(env, "SLURM_STEP_NUM_TASKS", "SLURM") <= 1:
        return None
    world = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM")
    counts = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", str(world)))
    if len(set(counts)) != 1 or sum(counts) != world:
        raise LaunchError(
            f"SLURM launch: tasks per node {env.get('SLURM_STEP_TASKS_PER_NODE')} are not the "
            f"same on every node ({world} tasks); D2 needs the same number of processes on "
            "every machine: use --ntasks-per-node (one task per GPU)."
        )
    addr = env.get("MASTER_ADDR") or first_host(
        env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    )
    if not addr:
        raise LaunchError("SLURM launch: set MASTER_ADDR (no SLURM_STEP_NODELIST either)")
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT", "SLURM")
    else:  # the same on every task of the job, different between jobs
        port = 20000 + _int(env, "SLURM_JOB_ID", "SLURM") % 20000
    return LaunchEnv("slurm", _int(env, "SLURM_PROCID", "SLURM"), world,
                     _int(env, "SLURM_LOCALID", "SLURM"), counts[0], f"tcp://{addr}:{port}")


def detect_launch_env(env: Optional[Mapping[str, str]] = None) -> Optional[LaunchEnv]:
    """The rendezvous set up by ``torchrun`` (checked first) or ``srun`` in ``env``
    (default ``os.environ``); ``None`` when this process was not started by either.

    Raises :class:`LaunchError` for incomplete or inconsistent variables.
    """
    env = os.environ if env is None else env
    found = _detect_torchrun(env) or _detect_slurm(env)
    if found is not None and not (0 <= found.rank < found.world_size
                                  and 0 <= found.local_rank < found.local_world_size):
        raise LaunchError(f"{found.launcher} launch: inconsistent ranks {found}")
    return found


def check_devices(device: str, processes_per_machine: int) -> None:
    """Refuse (:class:`LaunchError`) GPUs this machine does not have: a ``cuda`` device
    without CUDA, or more GPU processes per machine than visible GPUs."""
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    why = ("this PyTorch build has no CUDA" if torch.version.cuda is None
           else "no GPU is visible (torch.cuda.is_available() is False; "
           f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    if processes_per_machine > 1 and count == 0:
        raise LaunchError(
            f"--num-gpus {processes_per_machine} asks for {processes_per_machine} GPUs on this "
            f"machine, but {why}. Train on the CPU with one process (no --num-gpus, "
            "MODEL.DEVICE cpu), or start several CPU processes with `torchrun "
            f"--nproc_per_node {processes_per_machine} train_net.py ... MODEL.DEVICE cpu`."
        )
    if device.startswith("cuda") and count == 0:
        raise LaunchError(f"MODEL.DEVICE is {device!r}, but {why}. Set MODEL.DEVICE cpu to "
                          "train on the CPU.")
    if device.startswith("cuda") and processes_per_machine > count:
        raise LaunchError(
            f"{processes_per_machine} GPU processes per machine were asked for, but only {count} "
            f"GPU{'s are' if count != 1 else ' is'} visible: use at most {count} (under SLURM "
            "every task must see all GPUs of its node: --gpus-per-node, not --gpus-per-task)."
        )


def run_in_launched_process(
    main_func: Callable[..., Any],
    launch_env: LaunchEnv,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> Any:
    """Join the process group described by ``launch_env`` and run ``main_func(*args)``, with
    D2's communication state set up as ``detectron2.engine.launch`` sets it up in the processes
    it spawns (global group, per-machine group, CUDA device of the local rank)."""
    has_gpu = torch.cuda.is_available()
    try:
        dist.init_process_group(
            backend="NCCL" if has_gpu else "GLOO",
            init_method=launch_env.init_method,
            world_size=launch_env.world_size,
            rank=launch_env.rank,
            timeout=timeout,
        )
    except Exception:
        logger.error(f"Process group ({launch_env.launcher}): {launch_env.init_method}")
        raise
    comm.create_local_process_group(launch_env.local_world_size)
    if has_gpu:
        torch.cuda.set_device(launch_env.local_rank)
    comm.synchronize()
    logger.info(
        f"{launch_env.launcher} launch: rank {launch_env.rank} of {launch_env.world_size} "
        f"(machine {launch_env.machine_rank} of {launch_env.num_machines}, local rank "
        f"{launch_env.local_rank})"
    )
    return main_func(*args)


@contextmanager
def _forward_signals_to_children(names: Sequence[str]) -> Iterator[None]:
    """While D2's ``launch()`` waits for the processes it spawned, pass the preemption signals
    on to them (a scheduler may signal only the process it started)."""
    numbers = signal_numbers(names)

    def forward(signum, frame):
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, forward) for s in numbers}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def launch_training(
    main_func: Callable[..., Any],
    args: Any,
    *,
    device: str,
    preemption_signals: Sequence[str] = (),
) -> Any:
    """Run ``main_func(args)`` in every training process.

    ``args`` holds D2's ``default_argument_parser`` flags (``num_gpus``, ``num_machines``,
    ``machine_rank``, ``dist_url``). Started by ``torchrun`` / ``srun`` (see
    :func:`detect_launch_env`), this process joins their process group and those flags must
    keep their defaults; otherwise D2's ``launch()`` starts ``num_gpus`` processes per machine.
    A spawned process that was preempted makes this process exit with the same code.
    """
    launch_env = detect_launch_env()
    if launch_env is not None:
        flags = {"--num-gpus": (args.num_gpus, 1), "--num-machines": (args.num_machines, 1),
                 "--machine-rank": (args.machine_rank, 0)}
        given = [f"{k} {v}" for k, (v, default) in flags.items() if v != default]
        if given:
            raise LaunchError(
                f"this process was started by {launch_env.launcher} (rank {launch_env.rank} of "
                f"{launch_env.world_size}), which already started all processes: drop "
                f"{', '.join(given)} (they would start {args.num_gpus} more per process)."
            )
        check_devices(device, launch_env.local_world_size if device.startswith("cuda") else 1)
        return run_in_launched_process(main_func, launch_env, args=(args,))

    check_devices(device, args.num_gpus)
    if args.num_gpus * args.num_machines == 1:  # D2 runs main_func in this process
        return launch(main_func, 1, args=(args,))
    try:
        with _forward_signals_to_children(preemption_signals):
            return launch(main_func, args.num_gpus, num_machines=args.num_machines,
                          machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except torch.multiprocessing.ProcessExitedException as e:
        if e.exit_code == PREEMPTED_EXIT_CODE:
            raise SystemExit(PREEMPTED_EXIT_CODE) from None
        raise
