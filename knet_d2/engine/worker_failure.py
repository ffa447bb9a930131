"""A data-loader worker process that died (out-of-memory killer, a signal, a crash in native
code) stops training with an error naming the worker and what to do, not a hang.

PyTorch notices the dead worker (its SIGCHLD handler / the loader's watchdog) and raises a
``RuntimeError`` such as "DataLoader worker (pid 1234) is killed by signal: Killed.";
:func:`worker_failure_message` adds the iteration, the usual causes and how to continue.
"""
from __future__ import annotations

import re
from typing import Optional

__all__ = ["worker_failure_message"]

_WORKER_ERROR = re.compile(r"DataLoader worker \(pids?\(?s?\)? ?([\d, ]+)\)")


def worker_failure_message(iteration: int, err: BaseException) -> Optional[str]:
    """The explanation of ``err`` if it reports a dead data-loader worker, else ``None``."""
    text = str(err)
    m = _WORKER_ERROR.search(text)
    if not isinstance(err, RuntimeError) or m is None:
        return None
    pids = m.group(1).strip()
    return (
        f"Data-loader worker process (pid {pids}) died during training iteration {iteration}: "
        f"{text.strip()} Usual causes: the out-of-memory killer (check `dmesg`; lower "
        "DATALOADER.NUM_WORKERS or SOLVER.IMS_PER_BATCH), or a signal sent to the worker. "
        "Continue with --resume from the last checkpoint."
    )
