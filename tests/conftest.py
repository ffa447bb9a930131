"""Shared pytest fixtures: paths to the real sample data in ../shared/data."""
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests draw the same examples on every run ("ci", the default), so CI is never red by
# chance; HYPOTHESIS_PROFILE=explore draws new random examples each run to look for bugs.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Under pytest-xdist each worker gets one core: more torch threads than cores makes CPU
# convolutions several times slower (OpenMP oversubscription).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real COCO / ADE20K samples; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


def load_config(path, opts=()):
    """The config a user gets from ``train_net.py --config-file path opts...`` (not frozen)."""
    from knet_d2 import get_knet_cfg

    return get_knet_cfg(str(path), opts, freeze=False)


def unregister_datasets(names) -> None:
    """Remove ``names`` from D2's DatasetCatalog and MetadataCatalog (tests that re-register)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
