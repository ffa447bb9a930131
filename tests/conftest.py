"""Shared pytest fixtures: paths to the real sample data in ../shared/data."""
import logging
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from benchmarks.bench_lock import LOCK_ENV
from tests.helpers.paths import SHARED_DATA, require_shared_data

# Property tests draw the same examples on every run ("ci", the default), so CI is never red by
# chance; HYPOTHESIS_PROFILE=explore draws new random examples each run to look for bugs.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Under pytest-xdist each worker gets one core: more torch threads than cores makes CPU
# convolutions several times slower (OpenMP oversubscription).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def private_benchmark_lock(tmp_path_factory):
    """The benchmark scripts the tests run (smoke runs, nothing timed) take a lock file of this
    test process, not the machine's: they neither wait for a real benchmark nor for each other
    across pytest-xdist workers. Tests of the lock itself set ``$KNET_BENCH_LOCK`` again."""
    patch = pytest.MonkeyPatch()
    patch.setenv(LOCK_ENV, str(tmp_path_factory.mktemp("bench_lock") / "knet_bench.lock"))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def drop_log_handlers_on_closed_streams():
    """A test that trains in-process under ``capsys`` leaves D2's ``setup_logger`` stream
    handlers on ``sys.stdout`` as ``capsys`` had replaced it, a stream closed when that test
    ends; any later log call then prints a 'Logging error' traceback to stderr (which broke a
    demo test's one-line-error check in some test orders). Remove such handlers afterwards."""
    yield
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h.stream, "closed", False):
                lg.removeHandler(h)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real COCO / ADE20K samples; tests using it fail when it is absent (see
    :func:`tests.helpers.paths.require_shared_data`)."""
    return require_shared_data(SHARED_DATA)
