"""tools/convert-mmcv-resnet-v1c-to-d2.py on a state dict built in the official layout."""
import importlib.util
import pickle

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_backbone

from tests.helpers.paths import REPO_ROOT, load_config

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


# ------------------------------------------------ tools/convert-torchvision-to-d2.py
_tv_spec = importlib.util.spec_from_file_location(
    "convert_tv", REPO_ROOT / "tools/convert-torchvision-to-d2.py"
)
convert_tv = importlib.util.module_from_spec(_tv_spec)
_tv_spec.loader.exec_module(convert_tv)


def _torchvision_resnet(depth):
    """A torchvision ResNet with every parameter and BN statistic randomised."""
    import torchvision

    torch.manual_seed(depth)
    net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("depth,norm", [(50, "FrozenBN"), (18, "BN")])
def test_torchvision_converter_reproduces_layer4(tmp_path, capsys, depth, norm):
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec

    from knet_d2.modeling.backbone.deform_resnet import build_knet_resnet_backbone

    tv = _torchvision_resnet(depth)
    src, dst = tmp_path / f"resnet{depth}.pth", tmp_path / "out" / f"R-{depth}.pkl"
    torch.save(tv.state_dict(), src)
    assert convert_tv.main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "unused keys" in out and "fc.weight" in out and "fc.bias" in out

    with open(dst, "rb") as f:
        ckpt = pickle.load(f)
    assert ckpt["__author__"] == "torchvision" and ckpt["matching_heuristics"] is True
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM = depth, norm
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256 if depth == 50 else 64
    model = build_knet_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert set(ckpt["model"]) == {
        k for k in model.state_dict() if not k.endswith("num_batches_tracked")
    }  # every D2 weight is provided, nothing else
    DetectionCheckpointer(model).load(str(dst))
    for k, v in ckpt["model"].items():
        assert torch.equal(model.state_dict()[k], torch.as_tensor(v)), k

    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        t = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(t))))
        got = model(x)["res5"]
    assert got.shape == expected.shape == (1, 512 * (4 if depth == 50 else 1), 3, 2)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)

    before = dst.read_bytes()  # never overwrites
    assert convert_tv.main([str(src), str(dst)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and dst.read_bytes() == before


def test_torchvision_converter_rejects_non_resnet_input(tmp_path, capsys):
    src = tmp_path / "not_resnet.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4)).state_dict(), src)
    assert convert_tv.main([str(src), str(tmp_path / "o.pkl")]) == 1
    err = capsys.readouterr().err
    assert "not_resnet.pth" in err and "not a torchvision ResNet" in err and "0.weight" in err
    assert not (tmp_path / "o.pkl").exists()
    assert convert_tv.main([str(tmp_path / "absent.pth"), str(tmp_path / "o.pkl")]) == 2
    assert "absent.pth" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert convert_tv.main([str(garbage), str(tmp_path / "o.pkl")]) == 1
    assert "garbage.pth" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Swin
_swin_spec = importlib.util.spec_from_file_location(
    "convert_swin", REPO_ROOT / "tools/convert-pretrained-swin-model-to-d2.py"
)
convert_swin = importlib.util.module_from_spec(_swin_spec)
_swin_spec.loader.exec_module(convert_swin)

_SWIN_OPTS = [
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.SWIN.EMBED_DIM", "16",
    "MODEL.SWIN.DEPTHS", "[1, 1, 2, 1]", "MODEL.SWIN.NUM_HEADS", "[1, 2, 2, 4]",
    "MODEL.SWIN.WINDOW_SIZE", "4", "MODEL.SWIN.APE", "True",
    "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
]
_SWIN_MODELS = {
    # config, extra opts, attribute path of the Swin inside the built model
    "panoptic_fpn": (
        "configs/coco/panoptic-segmentation/swin/knet_swin_L_ms3x.yaml",
        ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.KNET.HIDDEN_DIM", "32",
         "MODEL.KNET.NECK.CONV_DIM", "32", "MODEL.KNET.NUM_PROPOSALS", "4",
         "MODEL.KNET.FFN_DIM", "64", "MODEL.KNET.NUM_HEADS", "4", "MODEL.KNET.NUM_STAGES", "1"],
        "backbone.bottom_up",
    ),
    "semantic_plain": (
        "configs/ade20k/semantic-segmentation/swin/knet_upernet_swin_T_512x512_80k.yaml",
        ["MODEL.SEM_SEG_HEAD.NORM", "BN", "MODEL.KNET.SEM.CHANNELS", "32",
         "MODEL.KNET.SEM.UPDATOR_CHANNELS", "16", "MODEL.KNET.SEM.AUX_CHANNELS", "16",
         "MODEL.KNET.FFN_DIM", "64", "MODEL.KNET.NUM_HEADS", "4", "MODEL.KNET.NUM_STAGES", "1"],
        "backbone",
    ),
}


def _swin_model(kind):
    from detectron2.modeling import build_model

    path, opts, attr = _SWIN_MODELS[kind]
    model = build_model(load_config(REPO_ROOT / path, _SWIN_OPTS + opts))
    swin = model
    for part in attr.split("."):
        swin = getattr(swin, part)
    return model, swin


def _official_swin_layout(swin):
    """What an official Swin ImageNet checkpoint of this net holds: the same plain names (random
    values, different from a fresh init), a classifier, the final norm and attention masks."""
    g = torch.Generator().manual_seed(1)
    sd = {}
    for k, v in swin.state_dict().items():
        sd[k] = v.clone() if k.endswith("relative_position_index") else torch.randn(
            v.shape, generator=g)
    sd["head.weight"], sd["head.bias"] = torch.randn(10, 128), torch.randn(10)
    sd["norm.weight"], sd["norm.bias"] = torch.ones(128), torch.zeros(128)
    sd["layers.2.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    return sd


@pytest.mark.parametrize("kind", sorted(_SWIN_MODELS))
def test_swin_converter_loads_every_backbone_tensor(tmp_path, capsys, kind):
    _, swin = _swin_model(kind)
    source = _official_swin_layout(swin)
    src = tmp_path / "swin.pth"
    torch.save({"model": source}, src)
    dst = tmp_path / "swin_d2.pkl"
    assert convert_swin.main([str(src), str(dst)]) == 0
    printed = capsys.readouterr().out
    assert "head.weight" in printed and "head.bias" in printed and "norm.weight" in printed
    with open(dst, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "third_party" and data["matching_heuristics"] is True
    assert set(data["model"]) == set(swin.state_dict())  # head / norm / attn_mask dropped

    model, fresh = _swin_model(kind)
    DetectionCheckpointer(model).load(str(dst))
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, source[k]), k


def test_swin_converter_accepts_bare_and_state_dict_wrappers(tmp_path):
    _, swin = _swin_model("semantic_plain")
    source = _official_swin_layout(swin)
    # a classification-model APE (1, L, C) becomes (1, C, H, W)
    ape = torch.randn(1, 56 * 56, 16)
    source["absolute_pos_embed"] = ape
    for i, wrapped in enumerate([source, {"state_dict": source}]):
        src, dst = tmp_path / f"in{i}.pth", tmp_path / f"out{i}.pkl"
        torch.save(wrapped, src)
        assert convert_swin.main([str(src), str(dst)]) == 0
        with open(dst, "rb") as f:
            model = pickle.load(f)["model"]
        assert model["absolute_pos_embed"].shape == (1, 16, 56, 56)
        got = torch.from_numpy(model["absolute_pos_embed"])
        assert torch.equal(got[0, :, 3, 5], ape[0, 3 * 56 + 5])  # token 3 * 56 + 5 = (3, 5)


def test_swin_converter_refuses_overwrite_and_foreign_checkpoints(tmp_path, capsys):
    src, dst = tmp_path / "swin.pth", tmp_path / "exists.pkl"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(1)}}, src)
    dst.write_bytes(b"keep me")
    assert convert_swin.main([str(src), str(dst)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and dst.read_bytes() == b"keep me"

    resnet = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(2)}},
               resnet)
    assert convert_swin.main([str(resnet), str(tmp_path / "o.pkl")]) == 1
    err = capsys.readouterr().err
    assert "resnet.pth" in err and "not a Swin checkpoint" in err
    assert not (tmp_path / "o.pkl").exists()

    mmdet = tmp_path / "mmdet_swin.pth"
    torch.save({"state_dict": {"patch_embed.projection.weight": torch.zeros(1),
                               "stages.0.blocks.0.norm1.weight": torch.zeros(1)}}, mmdet)
    assert convert_swin.main([str(mmdet), str(tmp_path / "o.pkl")]) == 1
    assert "mmdet" in capsys.readouterr().err

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert convert_swin.main([str(garbage), str(tmp_path / "o.pkl")]) == 1
    assert "garbage.pth" in capsys.readouterr().err
    assert convert_swin.main([str(tmp_path / "missing.pth"), str(tmp_path / "o.pkl")]) == 2
    assert "missing.pth" in capsys.readouterr().err
