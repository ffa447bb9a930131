"""knet_d2.Predictor (issue item 4): same results as D2's DefaultPredictor, every input kind,
zoo names, official files converted on load, wrong weights refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.engine import DefaultPredictor
from PIL import Image

import knet_d2
from knet_d2 import model_zoo
from knet_d2.engine import IncompatibleWeightsError
from knet_d2.model_zoo import ModelZooEntry
from tests.helpers.paths import load_config
from tests.helpers.tiny_zoo import TINY, TINY_INSTANCE, release, write_tiny_configs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config file, official release, knet_d2 checkpoint of the same weights, BGR image)."""
    tmp = tmp_path_factory.mktemp("predictor")
    root = write_tiny_configs(tmp / "configs")
    official = tmp / "knet_tiny_official.pth"
    source = release(root / TINY, official, seed=1)
    ours = tmp / "model_final.pth"
    torch.save({"model": source.state_dict()}, ours)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (72, 100, 3), dtype=np.uint8)
    image[20:50, 30:70] = (30, 200, 90)  # some structure
    path = tmp / "img.png"
    Image.fromarray(image[:, :, ::-1]).save(path)  # stored as RGB
    return root, official, ours, image, path


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    if "panoptic_seg" in a:
        assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0])
        assert a["panoptic_seg"][1] == b["panoptic_seg"][1]
    if "instances" in a:
        assert torch.equal(a["instances"].scores, b["instances"].scores)
        assert torch.equal(a["instances"].pred_masks, b["instances"].pred_masks)
        assert torch.equal(a["instances"].pred_classes, b["instances"].pred_classes)
    if "sem_seg" in a:
        assert torch.equal(a["sem_seg"], b["sem_seg"])


def test_same_outputs_as_default_predictor(tiny):
    root, official, ours, image, _ = tiny
    cfg = load_config(root / TINY, ["MODEL.WEIGHTS", str(ours)])
    expected = DefaultPredictor(cfg)(image)
    assert expected["panoptic_seg"][0].shape == (72, 100)
    # the official release, converted on load, gives the same model
    got = knet_d2.Predictor(str(root / TINY), weights=str(official))(image)
    _assert_same(expected, got)
    _assert_same(expected, knet_d2.Predictor(cfg)(image))  # a CfgNode (not modified)
    assert cfg.MODEL.WEIGHTS == str(ours)


def test_every_input_kind_gives_the_same_result(tiny):
    root, official, _, image, path = tiny
    predictor = knet_d2.Predictor(str(root / TINY), weights=str(official), device="cpu")
    reference = predictor(image)
    rgb = np.ascontiguousarray(image[:, :, ::-1])
    outputs = predictor([str(path), path, Image.open(path), image])
    assert isinstance(outputs, list) and len(outputs) == 4
    for out in outputs:
        _assert_same(reference, out)
    rgb_predictor = knet_d2.Predictor(str(root / TINY), weights=str(official),
                                      channel_order="RGB")
    _assert_same(reference, rgb_predictor(rgb))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 array in BGR order, got shape"):
        predictor(image[:, :, 0])
    with pytest.raises(TypeError, match="image path, numpy array or PIL image"):
        predictor(3)
    with pytest.raises(ValueError, match="channel_order"):
        knet_d2.Predictor(str(root / TINY), weights=str(official), channel_order="BRG")


def test_zoo_name_uses_the_official_release(tiny, monkeypatch):
    root, official, _, image, _ = tiny
    monkeypatch.setattr(model_zoo.model_zoo, "CONFIG_ROOT", root)
    entry = ModelZooEntry(TINY, "knet_tiny.py", official.as_uri(), "PQ 0.0")
    monkeypatch.setattr(model_zoo.model_zoo, "MODEL_ZOO", (entry,))
    by_name = knet_d2.Predictor(TINY)
    _assert_same(knet_d2.Predictor(str(root / TINY), weights=str(official))(image),
                 by_name(image))
    with pytest.raises(FileNotFoundError, match="neither a config file nor a knet_d2 model zoo"):
        knet_d2.Predictor("coco/nothing.yaml")


def test_wrong_or_missing_weights_are_refused(tiny, tmp_path):
    root, _, _, image, _ = tiny
    instance = tmp_path / "instance_release.pth"
    release(root / TINY_INSTANCE, instance)
    with pytest.raises(IncompatibleWeightsError, match="another task or class count") as e:
        knet_d2.Predictor(str(root / TINY), weights=str(instance))
    assert str(instance) in str(e.value)
    with pytest.raises(IncompatibleWeightsError, match="no checkpoint was loaded"):
        knet_d2.Predictor(str(root / TINY), weights="")
    loose = knet_d2.Predictor(str(root / TINY), weights=str(instance), strict=False)
    assert "panoptic_seg" in loose(image)


def test_weights_of_the_other_thing_classifier_are_refused(tiny, tmp_path):
    """A checkpoint trained with MODEL.KNET.THING_SOFTMAX carries its marker tensor: a model
    without the option refuses it, a model with the option refuses checkpoints without it (the
    class scores would be misread either way), and the matching pair runs."""
    from detectron2.modeling import build_model

    root, _, ours, image, _ = tiny
    softmax_cfg = load_config(root / TINY, ["MODEL.KNET.THING_SOFTMAX", "True"])
    softmax_ckpt = tmp_path / "softmax_model.pth"
    torch.save({"model": build_model(softmax_cfg).state_dict()}, softmax_ckpt)
    with pytest.raises(IncompatibleWeightsError, match="THING_SOFTMAX True in a model with False"):
        knet_d2.Predictor(str(root / TINY), weights=str(softmax_ckpt))
    with pytest.raises(IncompatibleWeightsError, match="THING_SOFTMAX False in a model with True"):
        knet_d2.Predictor(softmax_cfg, weights=str(ours))
    assert "panoptic_seg" in knet_d2.Predictor(softmax_cfg, weights=str(softmax_ckpt))(image)
