"""Where the tests find the repository and the real sample data, and how they load configs."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def load_config(path, opts=()):
    """The config a user gets from ``train_net.py --config-file path opts...`` (not frozen)."""
    from knet_d2 import get_knet_cfg

    return get_knet_cfg(str(path), opts, freeze=False)
