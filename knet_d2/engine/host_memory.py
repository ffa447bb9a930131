"""``KEEP_FREED_HOST_MEMORY``: let glibc's malloc keep freed memory for reuse.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and returns it to the kernel on ``free``. A CPU training step at COCO size allocates dozens of
such tensors (activations, their gradients, the stride-4 mask logits of every kernel and
stage), so every step touches new pages again and pays one page fault per 4 KiB. Two
``mallopt`` settings make malloc serve those blocks from its heap and keep freed memory there
(``M_MMAP_MAX = 0``: no per-allocation ``mmap``; ``M_TRIM_THRESHOLD`` = 2 GiB: do not give the
top of the heap back below that), so later steps reuse pages that are already mapped. The cost
is memory: the process keeps its peak, and the heap can fragment (measured in
benchmarks/RESULTS.md, section "Host memory kept for reuse").

The same settings are glibc's ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` environment
variables; this applies them from inside a run (and so in every launched worker), through
``ctypes``. Other C libraries (musl, macOS, Windows) are left alone with a warning.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any, Optional

__all__ = ["keep_freed_host_memory", "M_MMAP_MAX", "M_TRIM_THRESHOLD", "TRIM_THRESHOLD_BYTES"]

logger = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers of glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest value ``mallopt`` takes (an int): free heap tops below 2 GiB are kept
TRIM_THRESHOLD_BYTES = 2**31 - 1


def _glibc() -> Optional[Any]:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    return libc


def keep_freed_host_memory(libc: Optional[Any] = None) -> bool:
    """Make malloc keep freed memory of this process for reuse; True when it is set.

    Args:
        libc: the C library to configure (default: this process's glibc; tests pass a fake).

    Returns:
        False, with a warning, when the C library is not glibc (nothing is changed) or
        refuses a setting (a setting accepted before it stays in effect).
    """
    if libc is None:
        libc = _glibc()
        if libc is None:
            logger.warning(
                "KEEP_FREED_HOST_MEMORY: this process does not use glibc (%s); the memory "
                "allocator is unchanged", sys.platform,
            )
            return False
    for param, value, name in (
        (M_MMAP_MAX, 0, "M_MMAP_MAX"),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES, "M_TRIM_THRESHOLD"),
    ):
        if libc.mallopt(param, value) != 1:
            logger.warning(
                "KEEP_FREED_HOST_MEMORY: mallopt(%s, %d) was refused; freed memory is still "
                "returned to the kernel", name, value,
            )
            return False
    logger.info(
        "KEEP_FREED_HOST_MEMORY: malloc keeps freed memory for reuse (M_MMAP_MAX 0, "
        "M_TRIM_THRESHOLD %d); the process keeps its peak memory", TRIM_THRESHOLD_BYTES,
    )
    return True
