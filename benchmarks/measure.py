"""Timing and peak memory of benchmarked calls, on CUDA and on the CPU.

* :func:`time_interleaved`: mean seconds per call of several runners taking turns call by call,
  every call between two device synchronisations;
* :class:`SectionTimer`: wall time of named code sections (methods wrapped on one instance);
* :class:`PeakMemory`: peak memory of the calls inside a ``with`` block;
* :func:`autocast`: the precision a row is measured in (``--amp``).

CPU peak memory: Linux ``/proc/self/clear_refs`` (writing ``5`` resets the peak resident set
size ``VmHWM``) after ``malloc_trim(0)``; the figure is ``VmHWM`` after the measured calls
minus ``VmRSS`` before them, i.e. the extra resident memory the calls needed. Where that file
cannot be written the monotone ``ru_maxrss`` delta of ``resource.getrusage`` is used and the
table says so.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

#: ``--amp`` choices -> autocast dtype (``none``: fp32, no autocast)
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str, cache_enabled: bool = True):
    """``torch.autocast`` for ``amp`` in {bf16, fp16}; a no-op context for ``none``."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)


def _proc_status_kib(key: str) -> Optional[int]:
    try:
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Context manager measuring the peak memory of the calls inside it, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; ``peak_mib``
    is the absolute peak of allocated tensors (weights included), ``extra_mib`` the peak above
    the memory allocated on entry. CPU: see the module docstring (``method`` tells which);
    ``peak_mib`` is then the process's peak RSS and ``extra_mib`` its increase.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = float("nan")
        self.extra_mib = float("nan")
        self.method = ""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        else:
            _malloc_trim()
            if _reset_peak_rss() and _proc_status_kib("VmRSS") is not None:
                self._base = _proc_status_kib("VmRSS") * 1024
                self.method = "peak RSS increase (/proc/self/clear_refs + VmHWM)"
            else:
                self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                self.method = "ru_maxrss increase (monotone: 0 if below an earlier peak)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("peak RSS"):
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_mib = peak / 2**20
        self.extra_mib = max(peak - self._base, 0) / 2**20


def time_interleaved(
    runners: Dict[str, Callable[[int], object]], calls: Sequence[int], device: torch.device,
    on_result: Optional[Callable[[str, object], None]] = None,
) -> Dict[str, float]:
    """Mean seconds per call of every runner, the runners taking turns call by call.

    For each ``i`` in ``calls`` every runner runs ``fn(i)`` once, timed alone between two
    device synchronisations. Taking turns spreads the load changes of a shared machine over all
    runners alike, so the ratios of one run stay meaningful when the absolute times are noisy.
    ``on_result(name, result)`` sees every result (outside the timed region).
    """
    totals = {name: 0.0 for name in runners}
    for i in calls:
        for name, fn in runners.items():
            synchronize(device)
            t0 = time.perf_counter()
            out = fn(i)
            synchronize(device)
            totals[name] += time.perf_counter() - t0
            if on_result is not None:
                on_result(name, out)
    return {name: t / max(len(calls), 1) for name, t in totals.items()}


class SectionTimer:
    """Accumulates the wall time of named code sections (device-synchronised on CUDA).

    ``wrap(obj, "method", "name")`` replaces ``obj.method`` by a timed wrapper (an instance
    attribute, so nothing changes for other instances); :meth:`restore` puts the originals
    back. Nothing is patched unless a benchmark asks, so the model has no timing overhead
    otherwise.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: Dict[str, float] = {}
        self.counts: Dict[str, int] = {}
        self._patched: List[Tuple[object, str]] = []

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0
            self.counts[name] = self.counts.get(name, 0) + 1

    def wrap(self, obj: object, attr: str, name: str) -> None:
        orig = getattr(obj, attr)

        def timed(*args, **kwargs):
            with self.section(name):
                return orig(*args, **kwargs)

        setattr(obj, attr, timed)
        self._patched.append((obj, attr))

    def restore(self) -> None:
        for obj, attr in reversed(self._patched):
            with contextlib.suppress(AttributeError):
                delattr(obj, attr)
        self._patched.clear()

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()
