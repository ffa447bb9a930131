"""Checks shared by the tests of the benchmark scripts' command-line flags."""
from __future__ import annotations

from types import ModuleType
from typing import List

import pytest

from benchmarks import cli


def check_keep_freed_host_memory_runs_first(
    monkeypatch: pytest.MonkeyPatch, script: ModuleType, first_input: str, argv: List[str]
) -> None:
    """``--keep-freed-host-memory`` (last item of ``argv``) applies KEEP_FREED_HOST_MEMORY before
    ``script.<first_input>`` loads anything; without the flag malloc is left alone; a C library
    that refuses it stops the run instead of measuring without it."""
    assert argv[-1] == "--keep-freed-host-memory"
    calls = []

    class Stop(Exception):
        pass

    def no_inputs(*a, **k):
        raise Stop(list(calls))

    monkeypatch.setattr(script, first_input, no_inputs)
    monkeypatch.setattr(cli, "keep_freed_host_memory", lambda: calls.append(1) or True)
    with pytest.raises(Stop) as stop:
        script.main(argv)
    assert stop.value.args[0] == [1]
    calls.clear()
    with pytest.raises(Stop) as stop:
        script.main(argv[:-1])
    assert stop.value.args[0] == []
    monkeypatch.setattr(cli, "keep_freed_host_memory", lambda: False)
    with pytest.raises(SystemExit, match="refused"):
        script.main(argv)
