"""One timed benchmark at a time on a machine: every benchmark script takes this lock first.

Two timed runs on the same cores measure each other, not the model. Each script
(bench_inference, bench_train, bench_scaling, bench_demo_folder, bench_resize,
bench_onnx_runtime, train_synthetic, quickstart, fit_real_images, timed_series) runs inside
:func:`benchmark_lock`, an exclusive ``fcntl.flock`` on the file ``$KNET_BENCH_LOCK`` (default
``<system temp dir>/knet_d2_benchmark.lock``). A second script started while it is held exits at
once with one line naming the lock file and the PID and command of the run holding it. The
kernel drops the lock when its holder exits, however it exits, so a crashed run never leaves a
stale lock behind (the file itself stays, empty).

A script that starts another one (quickstart and timed_series run train_synthetic, the latter
through ``/usr/bin/time``) hands it the lock: the process started sees ``$KNET_BENCH_LOCK_HELD``
(the holder's PID) and runs under the lock when the holder is its parent or, where ``/proc``
shows the process tree, an ancestor a few levels up; so does a nested call in the holding
process itself.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, TypeVar

#: environment variable naming the lock file
LOCK_ENV = "KNET_BENCH_LOCK"
#: set by the holder for its own child processes: the PID of the process holding the lock
HELD_ENV = "KNET_BENCH_LOCK_HELD"

T = TypeVar("T")


class BenchmarkLockedError(SystemExit):
    """Another timed benchmark holds the lock (a ``SystemExit``: the script ends with the one-line
    message and exit status 1, no traceback)."""


def lock_path() -> Path:
    """``$KNET_BENCH_LOCK``, else ``knet_d2_benchmark.lock`` in the system temp dir."""
    return Path(os.environ.get(LOCK_ENV) or Path(tempfile.gettempdir()) / "knet_d2_benchmark.lock")


def _recorded_holder(fd: int) -> str:
    """``"<pid> <command>"`` as the holder wrote it into the lock file ("" when empty)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def _ancestor_pids(limit: int = 8) -> List[str]:
    """This process's PID, its parent's and, where ``/proc`` tells, theirs up the process tree
    (at most ``limit``): a benchmark started through a wrapper (``/usr/bin/time``, ``nice``)
    is a grandchild of the process that holds the lock."""
    pids = [os.getpid(), os.getppid()]
    while len(pids) < limit and pids[-1] > 1:
        try:
            stat = Path(f"/proc/{pids[-1]}/stat").read_text()
        except OSError:
            break
        pids.append(int(stat.rsplit(")", 1)[1].split()[1]))  # "pid (comm) state ppid ..."
    return [str(p) for p in pids]


def _handed_down(fd: int) -> bool:
    """Whether this process runs under the lock of an ancestor (or holds it already)."""
    held_by = os.environ.get(HELD_ENV, "")
    if not held_by or held_by not in _ancestor_pids():
        return False
    return _recorded_holder(fd).split(" ", 1)[0] == held_by


@contextlib.contextmanager
def benchmark_lock(module: str, argv: Sequence[str] = ()) -> Iterator[Path]:
    """Hold the benchmark lock for the ``with`` block; raise :class:`BenchmarkLockedError`
    naming the holder when another run holds it.

    Args:
        module: the script (``benchmarks.bench_train``), written into the lock file with
            ``argv`` so a refused run can say what it waits for.
    """
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # close-on-exec: children do not hold it
    try:
        if _handed_down(fd):
            yield path
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, command = _recorded_holder(fd).partition(" ")
            holder = f"PID {pid}: {command}" if pid else "a process yet to write its PID"
            raise BenchmarkLockedError(
                f"{module}: another timed benchmark is running (lock file {path} is held by "
                f"{holder}); wait for it to end: two timed runs on the same "
                "machine slow each other down") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} python -m {' '.join([module, *argv])}\n".encode())
        before = os.environ.get(HELD_ENV)
        os.environ[HELD_ENV] = str(os.getpid())
        try:
            yield path
        finally:
            if before is None:
                os.environ.pop(HELD_ENV, None)
            else:
                os.environ[HELD_ENV] = before
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def run_locked(module: str, parse_args: Callable[[List[str]], Any],
               run: Callable[[Any, List[str]], T], argv: Optional[Sequence[str]] = None) -> T:
    """A benchmark script's ``main``: ``run(parse_args(argv), argv)`` under the lock.

    ``argv`` defaults to ``sys.argv[1:]``; the arguments are parsed before the lock is taken, so
    ``--help`` and bad arguments answer at once even while another benchmark runs.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with benchmark_lock(module, argv):
        return run(args, argv)
