"""Keep training when one sample cannot be loaded (``DATALOADER.SKIP_BAD_SAMPLES``).

D2's ``MapDataset`` retries another index when a mapper returns ``None``. This wrapper turns a
loading error into ``None`` and counts it:

* the first failure of each file is logged as a WARNING with the file name, the error type and
  message and the running count (repeats of the same file at DEBUG level). "First" holds
  across data-loader worker processes and their re-creation (every epoch of a non-persistent
  loader): a marker file per reported file name in a temporary directory records it. The
  directory is removed when its process exits; one left behind by a killed process (its name
  carries the process id) is removed by the next :class:`ReportedOnce` of the same user;
* the count is ``num_skipped`` on the wrapper, and, when the mapper runs in the training process
  (``DATALOADER.NUM_WORKERS: 0``), also the event-storage scalar ``data/num_skipped_samples``
  (it then appears in metrics.json / TensorBoard). Data-loader workers are separate processes:
  their counts are in their log lines;
* after ``max_consecutive_failures`` failures in a row (or as many as the dataset has samples,
  when ``dataset_size`` is given) it raises :class:`TooManyBadSamplesError` listing the last
  files and reasons, instead of looping over a broken dataset (D2 itself would retry forever,
  or fail with an unrelated "Sample larger than population" once every index failed).
"""
from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Deque, Optional, Tuple

import torch.utils.data
from detectron2.utils.events import get_event_storage

__all__ = [
    "SkipBadSamples", "TooManyBadSamplesError", "ReportedOnce", "remove_stale_marker_directories",
]

logger = logging.getLogger(__name__)

#: exceptions treated as "bad sample" by default (loading / decoding / annotation errors)
DEFAULT_BAD_SAMPLE_ERRORS: Tuple[type, ...] = (
    OSError, ValueError, KeyError, IndexError, AssertionError, RuntimeError, SyntaxError,
)


_PREFIX = "knet_skipped_"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def remove_stale_marker_directories(parent: Optional[str] = None) -> int:
    """Remove marker directories of :class:`ReportedOnce` whose creating process is gone.

    ``atexit`` does not run when a process is killed (SIGKILL, a crash of the interpreter), so
    its ``knet_skipped_<pid>_*`` directory would stay in the temporary folder. Only directories
    of the current user whose process id no longer exists are removed.

    Args:
        parent: the folder to clean; the system temporary folder by default.

    Returns:
        the number of directories removed.
    """
    parent = parent or tempfile.gettempdir()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    removed = 0
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        if not entry.name.startswith(_PREFIX):
            continue
        pid_text = entry.name[len(_PREFIX):].split("_", 1)[0]
        if not pid_text.isdigit():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if _process_exists(int(pid_text)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += not os.path.exists(entry.path)
    return removed


class ReportedOnce:
    """Set of keys shared by a process and its (forked or spawned) data-loader workers.

    ``first(key)`` is True exactly once per key over all processes holding a copy: each key is
    an empty marker file created with ``O_EXCL`` in a temporary directory made by the creating
    process (removed when that process exits). Without a usable directory it falls back to a
    per-process set.
    """

    def __init__(self) -> None:
        self._seen: set = set()
        remove_stale_marker_directories()
        try:
            self.directory: Optional[str] = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}_")
        except OSError:
            self.directory = None
        else:
            atexit.register(shutil.rmtree, self.directory, True)

    def first(self, key: str) -> bool:
        if key in self._seen:
            return False
        self._seen.add(key)
        if self.directory is None:
            return True
        marker = os.path.join(self.directory, hashlib.sha1(key.encode()).hexdigest())
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:  # directory gone (creator exited) or unwritable: per-process only
            return True
        return True


class TooManyBadSamplesError(RuntimeError):
    """Too many training samples in a row could not be loaded (the dataset is likely broken)."""


class SkipBadSamples:
    """Wrap a dataset mapper so a bad sample is skipped (and counted) instead of fatal.

    Args:
        mapper: the dataset mapper, ``dict -> dict``.
        exceptions: the errors treated as "bad sample" (loading/decoding/annotation errors).
            Anything else (e.g. KeyboardInterrupt, MemoryError, TypeError from a bug) still
            propagates.
        max_consecutive_failures: give up after this many failures in a row (>= 1).
        dataset_size: number of dataset dicts, if known; the limit is then at most this.
    """

    def __init__(
        self,
        mapper: Callable[[dict], Optional[dict]],
        exceptions: Tuple[type, ...] = DEFAULT_BAD_SAMPLE_ERRORS,
        max_consecutive_failures: int = 100,
        dataset_size: Optional[int] = None,
    ):
        if max_consecutive_failures < 1:
            raise ValueError(
                f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}"
            )
        self.mapper = mapper
        self.exceptions = tuple(exceptions)
        self.max_consecutive_failures = int(max_consecutive_failures)
        if dataset_size is not None and dataset_size > 0:
            self.max_consecutive_failures = min(self.max_consecutive_failures, int(dataset_size))
        self.num_skipped = 0
        self.num_consecutive = 0
        self._recent: Deque[str] = collections.deque(maxlen=5)
        self._reported = ReportedOnce()

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        try:
            out = self.mapper(dataset_dict)
        except self.exceptions as e:
            self._on_failure(dataset_dict, e)
            return None
        self.num_consecutive = 0
        return out

    def _on_failure(self, dataset_dict: dict, e: BaseException) -> None:
        self.num_skipped += 1
        self.num_consecutive += 1
        name = str(dataset_dict.get("file_name", "<unknown file>"))
        reason = f"{type(e).__name__}: {e}"
        self._recent.append(f"{name}: {reason}")
        self._put_scalar()
        if self.num_consecutive >= self.max_consecutive_failures:
            recent = "\n  ".join(self._recent)
            raise TooManyBadSamplesError(
                f"{self.num_consecutive} training samples in a row could not be loaded "
                f"({self.num_skipped} in total); giving up, the dataset or its registration is "
                f"probably broken. Last failures:\n  {recent}\n(DATALOADER.SKIP_BAD_SAMPLES only "
                "skips occasional bad files; set it to False to stop at the first error.)"
            ) from e
        level = logging.WARNING if self._reported.first(name) else logging.DEBUG
        logger.log(
            level,
            "Skipping bad training sample %s: %s (%d skipped so far in this %s; set "
            "DATALOADER.SKIP_BAD_SAMPLES False to stop on errors)",
            name, reason, self.num_skipped, _where(),
        )

    def _put_scalar(self) -> None:
        """Record the count in the trainer's event storage when running in its process."""
        if torch.utils.data.get_worker_info() is not None:
            return  # a worker's (forked) storage copy never reaches the trainer
        try:
            storage = get_event_storage()
        except AssertionError:  # no EventStorage context (e.g. outside training)
            return
        storage.put_scalar("data/num_skipped_samples", self.num_skipped, smoothing_hint=False)

    def __getattr__(self, name: str) -> Any:  # expose the wrapped mapper's attributes
        if name == "mapper":
            raise AttributeError(name)
        return getattr(self.mapper, name)


def _where() -> str:
    info = torch.utils.data.get_worker_info()
    return "process" if info is None else f"data-loader worker {info.id}"
