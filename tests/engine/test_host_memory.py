"""KEEP_FREED_HOST_MEMORY: the mallopt settings, their failure modes and where they are applied."""
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

from knet_d2.engine import host_memory
from knet_d2.engine.host_memory import (
    M_MMAP_MAX,
    M_TRIM_THRESHOLD,
    TRIM_THRESHOLD_BYTES,
    keep_freed_host_memory,
)
from tests.helpers.requirements import skip_or_fail


class FakeLibc:
    """Records mallopt calls; refuses the parameters in ``refuse``."""

    def __init__(self, refuse=()):
        self.calls, self.refuse = [], set(refuse)

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 0 if param in self.refuse else 1


def test_sets_no_mmap_and_a_high_trim_threshold(caplog):
    libc = FakeLibc()
    with caplog.at_level(logging.INFO, logger="knet_d2.engine.host_memory"):
        assert keep_freed_host_memory(libc) is True
    assert libc.calls == [(M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)]
    assert (M_MMAP_MAX, M_TRIM_THRESHOLD) == (-4, -1)  # glibc's malloc.h numbers
    assert "keeps freed memory" in caplog.text


def test_a_refused_setting_is_reported(caplog):
    libc = FakeLibc(refuse={M_TRIM_THRESHOLD})
    assert keep_freed_host_memory(libc) is False
    assert "mallopt(M_TRIM_THRESHOLD" in caplog.text


def test_without_glibc_it_warns_and_changes_nothing(monkeypatch, caplog):
    monkeypatch.setattr(host_memory, "_glibc", lambda: None)
    assert keep_freed_host_memory() is False
    assert "does not use glibc" in caplog.text


def test_this_linux_process_accepts_it():
    """In a child process, so the test session's own allocator stays as it is."""
    if not sys.platform.startswith("linux"):
        skip_or_fail("glibc's mallopt settings exist on Linux only")
    code = (
        "from knet_d2.engine.host_memory import keep_freed_host_memory, _glibc\n"
        "assert _glibc() is not None, 'no glibc'\n"
        "assert keep_freed_host_memory()\n"
        "import torch; x = torch.ones(64 * 2**20 // 4); del x\n"  # a 64 MiB block, freed
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("enabled", [False, True])
def test_default_setup_applies_the_config_key(tmp_path, monkeypatch, enabled):
    from knet_d2 import get_knet_cfg
    from knet_d2.engine import defaults

    calls = []
    monkeypatch.setattr(defaults, "keep_freed_host_memory", lambda: calls.append(1) or True)
    cfg = get_knet_cfg(
        "configs/synthetic/instance/knet_R18_tiny.yaml",
        ["OUTPUT_DIR", str(tmp_path / "out"), "KEEP_FREED_HOST_MEMORY", str(enabled)],
        freeze=False,
    )
    args = SimpleNamespace(resume=False, eval_only=True, config_file="", opts=[])
    defaults.knet_default_setup(cfg, args)
    assert calls == ([1] if enabled else [])
