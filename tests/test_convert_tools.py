"""tools/convert-mmcv-resnet-v1c-to-d2.py on a state dict built in the official layout."""
import importlib.util
import pickle

import pytest
import torch
from conftest import REPO_ROOT, load_config
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone

from knet_d2.modeling.semantic.resnet_v1c import convert_mmcv_resnet_v1c_state_dict

_spec = importlib.util.spec_from_file_location(
    "convert_v1c", REPO_ROOT / "tools/convert-mmcv-resnet-v1c-to-d2.py"
)
convert_v1c = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_v1c)


def _backbone():
    cfg = load_config(REPO_ROOT / "configs/synthetic/semantic/knet_upernet_tiny.yaml")
    return build_backbone(cfg)


def _mmcv_layout(backbone):
    """Invert the documented renames: what an mmcv ResNetV1c checkpoint of this net holds."""
    inv_stem = {"conv1": "0", "conv1.norm": "1", "conv2": "3", "conv2.norm": "4",
                "conv3": "6", "conv3.norm": "7"}
    out = {}
    for k, v in backbone.state_dict().items():
        if k.startswith("stem."):
            mod, param = k[len("stem."):].rsplit(".", 1)
            out[f"stem.{inv_stem[mod]}.{param}"] = v.clone() + 1.0
            continue
        stage, block, rest = k.split(".", 2)
        rest = rest.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
        for i in (1, 2, 3):
            rest = rest.replace(f"conv{i}.norm.", f"bn{i}.")
        out[f"layer{int(stage[3:]) - 1}.{block}.{rest}"] = v.clone() + 1.0
    out["fc.weight"] = torch.zeros(10, 4)
    return out


def test_converter_round_trip_loads_every_key(tmp_path):
    backbone = _backbone()
    src = tmp_path / "v1c.pth"
    torch.save({"state_dict": _mmcv_layout(backbone)}, src)
    dst = tmp_path / "out" / "v1c_d2.pkl"
    assert convert_v1c.main([str(src), str(dst)]) == 0
    with open(dst, "rb") as f:
        model = pickle.load(f)["model"]
    assert set(model) == set(backbone.state_dict())  # every key consumed, fc dropped
    fresh = _backbone()
    DetectionCheckpointer(fresh).load(str(dst))
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, backbone.state_dict()[k] + 1.0), k
    # never overwrites
    assert convert_v1c.main([str(src), str(dst)]) == 2


def test_converter_errors_name_the_file(tmp_path, capsys):
    assert convert_v1c.main([str(tmp_path / "missing.pth"), str(tmp_path / "o.pkl")]) == 2
    assert "missing.pth" in capsys.readouterr().err


def test_unexpected_stem_key_is_an_error():
    with pytest.raises(KeyError, match="stem.2"):
        convert_mmcv_resnet_v1c_state_dict({"stem.2.weight": torch.zeros(1)})
