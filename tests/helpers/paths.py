"""Where the tests find the repository and the real sample data, and how they load configs."""
import os
from pathlib import Path

import pytest

from tests.helpers.requirements import in_ci

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Set to 1 to run the suite without ../shared/data: the tests that need it then skip (with the
# path in the reason) instead of failing. Ignored under CI ($CI set): there they always fail.
ALLOW_MISSING_ENV = "KNET_TESTS_WITHOUT_SHARED_DATA"


def require_shared_data(path: Path) -> Path:
    """``path`` (under ../shared/data) when it exists; otherwise the test fails naming it, or
    skips when ``$KNET_TESTS_WITHOUT_SHARED_DATA`` is 1 and ``$CI`` is not set (never
    silently)."""
    if path.exists():
        return path
    msg = (f"real sample data not found at {path}: link the shared data folder as ../shared "
           f"next to the repository, or set {ALLOW_MISSING_ENV}=1 to skip these tests")
    if os.environ.get(ALLOW_MISSING_ENV) == "1":
        if not in_ci():
            pytest.skip(msg)
        msg += f" ($CI is set: {ALLOW_MISSING_ENV} is ignored, CI never skips them)"
    pytest.fail(msg)


def load_config(path, opts=()):
    """The config a user gets from ``train_net.py --config-file path opts...`` (not frozen)."""
    from knet_d2 import get_knet_cfg

    return get_knet_cfg(str(path), opts, freeze=False)
