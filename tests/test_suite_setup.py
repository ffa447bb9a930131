"""The suite's own rules: tests that need ../shared/data never skip silently, and under CI
(``$CI`` set) nothing a test needs may be missing: it fails instead of skipping."""
import ast

import pytest

from tests.helpers.paths import ALLOW_MISSING_ENV, REPO_ROOT, SHARED_DATA, require_shared_data
from tests.helpers.requirements import CI_ENV, in_ci, require_module, skip_or_fail


@pytest.fixture
def not_ci(monkeypatch):
    monkeypatch.delenv(CI_ENV, raising=False)


def test_missing_shared_data_fails_naming_the_path(tmp_path, monkeypatch, not_ci):
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    missing = tmp_path / "no_such_sample"
    with pytest.raises(pytest.fail.Exception, match="no_such_sample"):
        require_shared_data(missing)


def test_missing_shared_data_skips_only_when_asked(tmp_path, monkeypatch, not_ci):
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match=ALLOW_MISSING_ENV):
        require_shared_data(tmp_path / "no_such_sample")


def test_missing_shared_data_fails_under_ci_even_when_skipping_is_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    monkeypatch.setenv(CI_ENV, "true")
    with pytest.raises(pytest.fail.Exception, match=r"no_such_sample.*\$CI is set"):
        require_shared_data(tmp_path / "no_such_sample")


def test_present_shared_data_is_returned():
    assert require_shared_data(SHARED_DATA) == SHARED_DATA


@pytest.mark.parametrize("value,expected", [
    ("true", True), ("1", True), ("yes-github", True), ("", False), ("0", False),
    ("false", False), ("False", False)])
def test_ci_is_read_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(CI_ENV, value)
    assert in_ci() is expected


def test_missing_module_skips_naming_it_outside_ci(not_ci):
    with pytest.raises(pytest.skip.Exception, match="module no_such_module_x .*: for the test"):
        require_module("no_such_module_x", "for the test")


def test_missing_module_fails_under_ci(monkeypatch):
    monkeypatch.setenv(CI_ENV, "true")
    with pytest.raises(pytest.fail.Exception, match=r"no_such_module_x.*\$CI is set"):
        require_module("no_such_module_x")
    with pytest.raises(pytest.fail.Exception, match="cannot run"):
        skip_or_fail("a reason")


def test_present_module_is_returned(monkeypatch):
    monkeypatch.setenv(CI_ENV, "true")
    assert require_module("json").dumps([1]) == "[1]"


def _unguarded_skips(path):
    """``(line, call)`` of every pytest.skip / importorskip / skipif in ``path`` (a skip that
    would turn CI green)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("skip", "importorskip", "skipif"):
            out.append((node.lineno, node.attr))
    return out


def test_tests_skip_only_through_the_ci_aware_helpers():
    """No test skips by itself: tests/helpers/requirements.py and paths.py are the only places
    that may call pytest.skip, so every skip fails under CI."""
    allowed = {REPO_ROOT / "tests/helpers/requirements.py", REPO_ROOT / "tests/helpers/paths.py",
               REPO_ROOT / "tests/test_suite_setup.py"}
    files = sorted((REPO_ROOT / "tests").rglob("*.py"))
    found = {str(p.relative_to(REPO_ROOT)): skips for p in files
             if p not in allowed and (skips := _unguarded_skips(p))}
    assert found == {}
