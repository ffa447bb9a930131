"""One training run per ``OUTPUT_DIR``: two runs writing the same directory is a start-up error.

Two processes that do not form one process group (e.g. ``torchrun`` workers that never joined
a group, or the same job submitted twice) would both be "rank 0" and overwrite each other's
checkpoints, ``last_checkpoint`` and ``metrics.json``. The main process of a training run holds
an exclusive lock on ``OUTPUT_DIR/.train.lock`` (``fcntl.lockf``: released by the kernel when
the process ends, however it ends, so it never goes stale; works on NFS with lock support).
The file records who holds it, for the error message of the second run.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Dict, Optional

__all__ = ["OutputDirInUseError", "OutputDirLock", "lock_output_dir", "LOCK_NAME"]

#: name of the lock file in ``OUTPUT_DIR``
LOCK_NAME = ".train.lock"

_HELD: Dict[str, OutputDirLock] = {}


class OutputDirInUseError(RuntimeError):
    """Another process holds the training lock of the ``OUTPUT_DIR``."""


class OutputDirLock:
    """An exclusive, non-blocking lock on ``<output_dir>/.train.lock`` held until
    :meth:`release` or the end of the process."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> OutputDirLock:
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputDirInUseError(
                f"OUTPUT_DIR {os.path.dirname(self.path)} is in use by another training run "
                f"({holder}): two runs writing one OUTPUT_DIR would overwrite each other's "
                "checkpoints and metrics. If both are meant to be one distributed run, start "
                "them so that they form one process group (torchrun, srun with one task per "
                "GPU, or --num-machines/--machine-rank/--dist-url); otherwise set another "
                "OUTPUT_DIR or wait for that run to end."
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lockf lock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
        return (f"pid {info['pid']} on host {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError):
        return "holder unknown"


def lock_output_dir(output_dir: str) -> Optional[OutputDirLock]:
    """Hold the training lock of a local ``output_dir`` for the rest of this process (call it
    on the main process only). Returns ``None`` for remote directories or platforms without
    ``fcntl``; raises :class:`OutputDirInUseError` when another process holds it."""
    if not output_dir or "://" in output_dir or sys.platform == "win32":
        return None
    key = os.path.realpath(output_dir)
    if key not in _HELD:
        _HELD[key] = OutputDirLock(output_dir).acquire()
    return _HELD[key]
