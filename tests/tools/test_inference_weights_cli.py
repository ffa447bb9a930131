"""The demo and tools/export_model.py take an official release as MODEL.WEIGHTS and refuse a
checkpoint that does not fit the config, by name (issue items 1 and 2)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from tests.helpers.paths import REPO_ROOT, load_config
from tests.helpers.tiny_zoo import TINY, TINY_INSTANCE, release, write_tiny_configs


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_weights")
    root = write_tiny_configs(tmp / "configs")
    release(root / TINY, tmp / "panoptic_release.pth", seed=1)
    release(root / TINY_INSTANCE, tmp / "instance_release.pth", seed=2)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(tmp / "photo.png")
    return tmp, root


@pytest.fixture(scope="module")
def demo_cli():
    return _module("knet_demo_cli_weights", REPO_ROOT / "demo/demo.py")


def _demo(demo_cli, tmp, root, weights, *opts):
    return demo_cli.main([
        "--config-file", str(root / TINY), "--input", str(tmp / "photo.png"),
        "--output", str(tmp / "out" / weights) + "/", "--confidence-threshold", "0.0",
        "--opts", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(tmp / weights), *opts,
    ])


def test_demo_draws_with_the_released_file(files, demo_cli, capsys):
    tmp, root = files
    assert _demo(demo_cli, tmp, root, "panoptic_release.pth") == 0
    assert (tmp / "out" / "panoptic_release.pth" / "photo.png").is_file()


def test_demo_refuses_a_checkpoint_of_another_task(files, demo_cli, capsys):
    tmp, root = files
    assert _demo(demo_cli, tmp, root, "instance_release.pth") == 2
    err = capsys.readouterr().err
    assert f"MODEL.WEIGHTS {tmp / 'instance_release.pth'}" in err
    assert "with another shape" in err and "another task or class count" in err
    assert not (tmp / "out" / "instance_release.pth" / "photo.png").exists()  # nothing drawn
    # an expert may go on
    assert _demo(demo_cli, tmp, root, "instance_release.pth", "MODEL.WEIGHTS_STRICT", "False") == 0


def test_export_loads_releases_and_refuses_misfits(files):
    tmp, root = files
    export = _module("knet_export_cli_weights", REPO_ROOT / "tools/export_model.py")
    ok = load_config(root / TINY, ["MODEL.WEIGHTS", str(tmp / "panoptic_release.pth")])
    assert not export.build_model(ok).training
    bad = load_config(root / TINY, ["MODEL.WEIGHTS", str(tmp / "instance_release.pth")])
    with pytest.raises(export.ExportError, match="another task or class count"):
        export.build_model(bad)
