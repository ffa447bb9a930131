"""Keep training when one sample cannot be loaded (``DATALOADER.SKIP_BAD_SAMPLES``).

D2's ``MapDataset`` retries another index when a mapper returns ``None``. This wrapper turns a
loading error into ``None``, logs the file name and the error once per file, and counts skips.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

__all__ = ["SkipBadSamples"]

logger = logging.getLogger(__name__)


class SkipBadSamples:
    """Wrap a dataset mapper so a bad sample is skipped (and counted) instead of fatal.

    Args:
        mapper: the dataset mapper, ``dict -> dict``.
        exceptions: the errors treated as "bad sample" (loading/decoding/annotation errors).
            Anything else (e.g. KeyboardInterrupt, MemoryError) still propagates.
    """

    def __init__(
        self,
        mapper: Callable[[dict], Optional[dict]],
        exceptions: tuple = (OSError, ValueError, KeyError, IndexError, AssertionError,
                             RuntimeError, SyntaxError),
    ):
        self.mapper = mapper
        self.exceptions = exceptions
        self.num_skipped = 0
        self._reported: set = set()

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        try:
            return self.mapper(dataset_dict)
        except self.exceptions as e:
            self.num_skipped += 1
            name = dataset_dict.get("file_name", "<unknown file>")
            if name not in self._reported:
                self._reported.add(name)
                logger.warning(
                    "Skipping bad training sample %s: %s: %s (%d skipped so far in this worker;"
                    " set DATALOADER.SKIP_BAD_SAMPLES False to stop on errors)",
                    name, type(e).__name__, e, self.num_skipped,
                )
            return None

    def __getattr__(self, name: str) -> Any:  # expose the wrapped mapper's attributes
        if name == "mapper":
            raise AttributeError(name)
        return getattr(self.mapper, name)
