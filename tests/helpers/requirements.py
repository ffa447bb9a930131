"""What a test needs from the machine (a module, a library version): a test whose
need is not met skips with the reason on a developer's machine, and fails under CI (``$CI`` set,
as every CI service and ``.ci/run``'s caller set it), where ``make install`` must have provided
everything, so that CI never turns green by skipping."""
import importlib
import os
from types import ModuleType

import pytest

CI_ENV = "CI"


def in_ci() -> bool:
    """Whether ``$CI`` is set to anything but empty, ``0`` or ``false``."""
    return os.environ.get(CI_ENV, "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip the current test (or module, when called at import time) with ``reason``; under CI
    fail with it instead."""
    if in_ci():
        pytest.fail(f"{reason} (${CI_ENV} is set: a test CI cannot run is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, why: str = "") -> ModuleType:
    """The imported module ``name``; when it cannot be imported, :func:`skip_or_fail` naming it
    (``why``: what the test needs it for, or how it is installed)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        skip_or_fail(f"module {name} is not importable ({e}){': ' + why if why else ''}")
        raise  # not reached: skip_or_fail raises

