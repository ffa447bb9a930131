"""Every official K-Net release (16: 9 mmdet, 7 mmseg) loads into its knet_d2 config through
the on-load conversion of ``KNetCheckpointer``, with every key consumed and every model tensor
filled at its shape.

The layouts (key names, shapes, integer buffers) are the ``official_knet_manifests`` of the
shared data, recorded from the official code; the tensors here are zeros of those shapes (the
integer buffers carry their recorded values, which the converter checks). The config of each
release comes from the model zoo table (``official_config``). Full-size models, built once per
release on the CPU without running the weight initialisers; measured on the shared 2-core
development machine: 5-10 s per Swin-L release, about 1 min for the 17 tests on one worker.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging

import pytest
import torch
from detectron2.modeling import build_model

from knet_d2 import model_zoo
from knet_d2.engine import KNetCheckpointer, check_inference_weights
from tests.helpers.paths import SHARED_DATA, load_config, require_shared_data

MANIFESTS = SHARED_DATA / "official_knet_manifests"
LAYOUT_FILES = {"mmdet": "mmdet_knet_releases.json", "mmseg": "mmseg_knet_releases.json"}
ZOO_BY_OFFICIAL = {e.official_config: e for e in model_zoo.MODEL_ZOO}


def _releases():
    if not MANIFESTS.is_dir():  # one test that fails (or skips on request), naming the folder
        return [pytest.param(None, None, id="manifests-missing")]
    out = []
    for layout, name in LAYOUT_FILES.items():
        with open(MANIFESTS / name) as f:
            for official_config in json.load(f):
                out.append(pytest.param(layout, official_config, id=official_config))
    return out


_INITS = ("normal_", "trunc_normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_",
          "xavier_uniform_", "xavier_normal_", "constant_", "zeros_", "ones_", "orthogonal_")


@contextlib.contextmanager
def _without_weight_init():
    """Build a model without running ``torch.nn.init`` (most of a full-size build's time): the
    tensors keep whatever their memory held, so the "filled" check below is meaningful."""
    saved = {name: getattr(torch.nn.init, name) for name in _INITS}
    try:
        for name in _INITS:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _zero_state_dict(layout: str, official_config: str) -> dict:
    with open(MANIFESTS / LAYOUT_FILES[layout]) as f:
        manifest = json.load(f)[official_config]
    out = {}
    for key, spec in manifest.items():
        if isinstance(spec, dict):  # integer buffer with its recorded values
            out[key] = torch.tensor(spec["int_values"], dtype=torch.long).reshape(spec["shape"])
        else:
            out[key] = torch.zeros(spec)
    return out


def test_every_manifest_release_is_in_the_model_zoo():
    require_shared_data(MANIFESTS)
    params = _releases()
    names = {p.values[1] for p in params}
    assert len(names) == 16
    assert names == set(ZOO_BY_OFFICIAL)


@pytest.mark.parametrize("layout,official_config", _releases())
def test_release_loads_completely_into_its_config(layout, official_config, tmp_path,
                                                  monkeypatch, caplog):
    require_shared_data(MANIFESTS)
    entry = ZOO_BY_OFFICIAL[official_config]
    cfg = load_config(model_zoo.get_config_file(entry.config),
                      ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    with _without_weight_init():
        model = build_model(cfg)
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = _zero_state_dict(layout, official_config)
    n_keys = len(official)

    # The released file's content, as torch.load returns it (an mmcv checkpoint); writing a
    # Swin-L file of zeros to disk would only test torch.save.
    path = tmp_path / f"{official_config[:-3]}.pth"
    path.write_bytes(b"")
    checkpointer = KNetCheckpointer(model)
    released = {"meta": {"epoch": 36}, "state_dict": official}
    monkeypatch.setattr(checkpointer, "_torch_load", lambda f: released)
    caplog.set_level(logging.INFO)
    checkpointer.load(str(path))
    report = checkpointer.last_load_report
    released.clear()  # free the zero tensors (up to 1 GB for Swin-L) before the checks
    official.clear()
    gc.collect()

    assert f"{layout} layout" in caplog.text and "official K-Net checkpoint" in caplog.text
    assert report.unexpected == []  # every converted key has a place in the model
    assert report.missing == [] and report.mismatched == []  # every tensor filled, same shape
    assert report.total == sum(1 for k in expected_shapes if not k.endswith(
        ("num_batches_tracked", "pixel_mean", "pixel_std")))
    check_inference_weights(report, strict=True)
    # every official key was consumed: converted (and loaded) or dropped on purpose
    converted = int(caplog.text.split("converted ")[1].split(" tensors")[0])
    dropped = sum(int(part.split(" ")[0]) for part in caplog.text.split("; dropped ")[1:])
    assert converted + dropped == n_keys
    assert converted == len(expected_shapes)  # one checkpoint tensor per model tensor
    for k, v in model.state_dict().items():
        assert tuple(v.shape) == expected_shapes[k]
        if v.is_floating_point() and not k.endswith(("pixel_mean", "pixel_std")):
            assert not v.any(), f"{k} was not filled from the checkpoint"
