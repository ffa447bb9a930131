"""knet_d2.model_zoo (issue item 3): names -> configs and official URLs, ``get`` builds and loads
(official files converted on load), and MODEL_ZOO.md agrees with the table.

Offline: ``get`` is tested with a small official-layout file given as a local path and as a
``file://`` URL, through a zoo entry added for the synthetic tiny config.
"""
from __future__ import annotations

import re

import pytest
import torch

from knet_d2 import model_zoo
from knet_d2.engine import IncompatibleWeightsError
from knet_d2.model_zoo import ModelZooEntry
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny_zoo import TINY, TINY_INSTANCE, release, write_tiny_configs


def test_every_entry_has_a_config_and_known_names_resolve():
    assert len(model_zoo.MODEL_ZOO) == 16 and len(set(model_zoo.names())) == 16
    for name in model_zoo.names():
        path = model_zoo.get_config_file(name)
        assert path == str(REPO_ROOT / "configs" / name)
    assert model_zoo.get_config_file("configs/coco/panoptic-segmentation/knet_R50_1x") == str(
        REPO_ROOT / "configs/coco/panoptic-segmentation/knet_R50_1x.yaml")
    with pytest.raises(FileNotFoundError, match="Did you mean coco/panoptic-segmentation/knet"):
        model_zoo.get_config_file("coco/panoptic-segmentation/knet_R5_1x.yaml")


def test_checkpoint_urls_and_unreleased_configs():
    url = model_zoo.get_checkpoint_url("coco/panoptic-segmentation/knet_R50_1x")
    assert url == (
        "https://download.openmmlab.com/mim-example/knet/det/knet/knet_s3_r50_fpn_1x_coco-panoptic"
        "/knet_s3_r50_fpn_1x_coco-panoptic_20211017_151750-395fbcba.pth"
    )
    with pytest.raises(RuntimeError, match="no official checkpoint was released.*mask AP 37.8"):
        model_zoo.get_checkpoint_url("coco/instance-segmentation/knet_R50_ms3x.yaml")
    with pytest.raises(KeyError, match="not in the knet_d2 model zoo"):
        model_zoo.get_checkpoint_url("coco/panoptic-segmentation/knet_R101_N256_ms3x.yaml")


def test_missing_configs_folder_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(model_zoo.model_zoo, "CONFIG_ROOT", tmp_path / "configs")
    with pytest.raises(FileNotFoundError, match="pip install -e"):
        model_zoo.get_config_file("coco/panoptic-segmentation/knet_R50_1x.yaml")


def _model_zoo_md_rows():
    """(config, url or None, row text) of every MODEL_ZOO.md table row linking a config."""
    rows = []
    for line in (REPO_ROOT / "MODEL_ZOO.md").read_text().splitlines():
        cfg = re.search(r"\]\(configs/([^)]+\.yaml)\)", line)
        if line.startswith("|") and cfg:
            url = re.search(r"\]\((https://[^)]+\.pth)\)", line)
            rows.append((cfg.group(1), url.group(1) if url else None, line))
    return rows


def test_model_zoo_md_agrees_with_the_table():
    rows = {cfg: (url, line) for cfg, url, line in _model_zoo_md_rows()}
    for e in model_zoo.MODEL_ZOO:
        assert e.config in rows, f"MODEL_ZOO.md has no row for {e.config}"
        url, line = rows[e.config]
        assert url == e.url, e.config
        value = e.metric.split(" ", 2)[-1] if e.metric.startswith("mask") else e.metric.split(
            " ", 1)[1]
        assert f"| {value} |" in line, (e.config, e.metric)
    released = {cfg for cfg, (url, _) in rows.items() if url}
    assert released == {e.config for e in model_zoo.MODEL_ZOO if e.url}


@pytest.fixture
def tiny_root(monkeypatch, tmp_path):
    root = write_tiny_configs(tmp_path / "configs")
    monkeypatch.setattr(model_zoo.model_zoo, "CONFIG_ROOT", root)
    return root


@pytest.fixture
def tiny_zoo(monkeypatch, tmp_path, tiny_root):
    """A zoo entry for the tiny panoptic config, released as a small mmdet file."""
    path = tmp_path / "knet_tiny_official.pth"
    source = release(tiny_root / TINY, path)
    entry = ModelZooEntry(TINY, "knet_tiny.py", path.as_uri(), "PQ 0.0")
    monkeypatch.setattr(model_zoo.model_zoo, "MODEL_ZOO", model_zoo.MODEL_ZOO + (entry,))
    return source, path


def _same_state(a, b):
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_get_trained_loads_an_official_file_url_converted(tiny_zoo, monkeypatch):
    source, path = tiny_zoo
    assert model_zoo.get_checkpoint_url(TINY) == path.as_uri()
    model = model_zoo.get(TINY, trained=True, device="cpu")
    assert not model.training and _same_state(source, model)

    entry = ModelZooEntry(TINY, "knet_tiny.py", str(path), "PQ 0.0")  # a local path
    monkeypatch.setattr(model_zoo.model_zoo, "MODEL_ZOO", (entry,))
    assert _same_state(source, model_zoo.get(TINY, trained=True))


def test_get_refuses_a_release_that_does_not_fit(monkeypatch, tmp_path, tiny_root):
    path = tmp_path / "instance.pth"
    release(tiny_root / TINY_INSTANCE, path)
    entry = ModelZooEntry(TINY, "knet_tiny.py", path.as_uri(), "PQ 0.0")
    monkeypatch.setattr(model_zoo.model_zoo, "MODEL_ZOO", (entry,))
    with pytest.raises(IncompatibleWeightsError, match="another task or class count"):
        model_zoo.get(TINY, trained=True)
