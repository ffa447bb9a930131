"""The suite's own rules: tests that need ../shared/data never skip silently."""
import pytest

from tests.helpers.paths import ALLOW_MISSING_ENV, SHARED_DATA, require_shared_data


def test_missing_shared_data_fails_naming_the_path(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_MISSING_ENV, raising=False)
    missing = tmp_path / "no_such_sample"
    with pytest.raises(pytest.fail.Exception, match="no_such_sample"):
        require_shared_data(missing)


def test_missing_shared_data_skips_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOW_MISSING_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match=ALLOW_MISSING_ENV):
        require_shared_data(tmp_path / "no_such_sample")


def test_present_shared_data_is_returned():
    assert require_shared_data(SHARED_DATA) == SHARED_DATA
