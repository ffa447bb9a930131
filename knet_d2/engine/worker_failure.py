"""A data-loader worker process that died (out-of-memory killer, a signal, a crash in native
code) stops training with an error naming the worker and what to do, not a hang.

PyTorch notices a dead worker (its SIGCHLD handler / the loader's watchdog) and raises
"DataLoader worker (pid 1234) is killed by signal: Killed."; a worker killed while handing a batch
over can also surface as a bare ``ConnectionResetError``. :func:`worker_failure_message` names
the dead worker(s) from the loader's iterator in either case, with the iteration, the usual
causes and how to continue.
"""
from __future__ import annotations

import re
import signal
from typing import Any, Iterator, List, Optional

__all__ = ["WatchedLoader", "dead_workers", "worker_failure_message"]

_WORKER_ERROR = re.compile(r"DataLoader worker \(pids?\(?s?\)? ?([\d, ]+)\)")


class WatchedLoader:
    """Iterates ``loader`` and keeps its current iterator (``iterator``, None before the first
    ``iter``), whose worker processes :func:`dead_workers` inspects when training fails.

    Attributes:
        loader: the wrapped data loader (e.g. a ``torch.utils.data.DataLoader``).
        iterator: the iterator of the last ``iter(self)``.
    """

    def __init__(self, loader: Any):
        self.loader = loader
        self.iterator: Any = None

    def __iter__(self) -> Iterator[Any]:
        self.iterator = iter(self.loader)
        return self.iterator

    def __len__(self) -> int:
        return len(self.loader)


def dead_workers(loader_iter: Any) -> List[str]:
    """``"pid N, killed by SIGKILL"`` / ``"pid N, exit code C"`` for each worker process of a
    multi-process ``DataLoader`` iterator that has ended with an error."""
    described = []
    for worker in getattr(loader_iter, "_workers", None) or []:
        code = worker.exitcode
        if code is None or code == 0:
            continue
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        described.append(f"pid {worker.pid}, {how}")
    return described


def worker_failure_message(
    iteration: int, err: BaseException, loader_iter: Any = None
) -> Optional[str]:
    """The explanation of ``err`` if a data-loader worker died (seen in ``loader_iter``'s
    workers or in torch's message), else ``None``."""
    workers = dead_workers(loader_iter)
    if not workers:
        m = _WORKER_ERROR.search(str(err)) if isinstance(err, RuntimeError) else None
        if m is None:
            return None
        workers = [f"pid {m.group(1).strip()}"]
    return (
        f"Data-loader worker process ({'; '.join(workers)}) died during training iteration "
        f"{iteration} ({type(err).__name__}: {str(err).strip()}). Usual causes: the "
        "out-of-memory killer (check `dmesg`; lower DATALOADER.NUM_WORKERS or "
        "SOLVER.IMS_PER_BATCH), or a signal sent to the worker. Continue with --resume from the "
        "last checkpoint."
    )
