"""tools/convert_knet_to_d2.py and knet_d2.checkpoint on official-layout K-Net checkpoints.

No official file is downloaded here. Each test builds a small knet_d2 model from a real config
(narrowed with opts), randomises every tensor, and writes what the official code would save for
that network (tests/helpers/official_layouts.py): names produced by an inverse mapping written
from docs/reference.md §4.3 (independent of the converter's rules), plus official-only keys (mmdet
``num_batches_tracked``) and, for Swin, the mmdet/mmseg ``nn.Unfold`` channel order of the
patch-merging weights (derived numerically). The converted file must load into a fresh
model with zero missing / unexpected keys, reproduce every tensor and give identical outputs.
"""
import importlib.util

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from torch import nn

from knet_d2.checkpoint import (
    convert_knet_state_dict,
    detect_task,
    unfold_to_concat_order,
    unwrap_state_dict,
)
from tests.helpers.official_layouts import (
    ADE,
    COCO,
    NARROW_R50,
    R18,
    SMALL_DET,
    SMALL_SEM,
    SMALL_SWIN,
    build,
    mmdet_layout,
    mmseg_layout,
    save_mmcv,
    unfold_positions,
)
from tests.helpers.paths import REPO_ROOT, load_config

_spec = importlib.util.spec_from_file_location(
    "convert_knet_to_d2", REPO_ROOT / "tools/convert_knet_to_d2.py"
)
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


# ------------------------------------------------------------------ helpers
def image(h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


def check_converted(path, source, config, opts):
    """Load ``path`` like MODEL.WEIGHTS does into a fresh model; compare with ``source``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["matching_heuristics"] is False
    assert ckpt["__author__"].startswith("knet_d2 converter (")
    expected = source.state_dict()
    assert set(ckpt["model"]) == set(expected)  # zero missing, zero unexpected

    fresh = build(config, opts, seed=99)  # different weights until loaded
    DetectionCheckpointer(fresh).load(str(path))
    incompatible = fresh.load_state_dict(ckpt["model"], strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, expected[k]), k
    return fresh.eval()


def assert_same_det_outputs(a, b):
    with torch.no_grad():
        batch = [{"image": image(64, 64), "height": 64, "width": 64},
                 {"image": image(48, 64, seed=1), "height": 48, "width": 64}]
        images = a.preprocess_image(batch)
        rpn_a, stages_a = a.forward_kernels(images)
        rpn_b, stages_b = b.forward_kernels(images)
        for k in rpn_a:
            assert torch.equal(rpn_a[k], rpn_b[k]), k
        for sa, sb in zip(stages_a, stages_b):
            for k in sa:
                assert torch.equal(sa[k], sb[k]), k
        out_a, out_b = a(batch), b(batch)
    for ra, rb in zip(out_a, out_b):
        if "panoptic_seg" in ra:
            assert torch.equal(ra["panoptic_seg"][0], rb["panoptic_seg"][0])
        assert torch.equal(ra["instances"].scores, rb["instances"].scores)
        assert torch.equal(ra["instances"].pred_masks, rb["instances"].pred_masks)


def run_cli(args, capsys):
    rc = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------ Swin patch merging
def test_unfold_permutation_matches_official_patch_merging():
    """Numeric proof of the Swin channel reorder: the same map gathered by nn.Unfold (mmdet)
    and by the official concat, passed through LayerNorm + Linear, gives the same result once
    the mmdet weights are reordered by unfold_to_concat_order."""
    torch.manual_seed(0)
    c, h, w = 5, 4, 6
    x = torch.randn(2, c, h, w)
    mm_feats = nn.Unfold(kernel_size=2, stride=2)(x).transpose(1, 2)  # (B, L, 4C)
    xs = x.permute(0, 2, 3, 1)
    off_feats = torch.cat(
        [xs[:, 0::2, 0::2], xs[:, 1::2, 0::2], xs[:, 0::2, 1::2], xs[:, 1::2, 1::2]], dim=-1
    ).reshape(2, -1, 4 * c)
    assert not torch.equal(mm_feats, off_feats)  # the orders really differ
    perm = unfold_positions(c)
    assert torch.equal(mm_feats, off_feats[..., perm])
    # the converter's order is the inverse of perm (mmdet -> official)
    assert torch.equal(unfold_to_concat_order(mm_feats, 2), off_feats)

    mm_norm, mm_lin = nn.LayerNorm(4 * c), nn.Linear(4 * c, 2 * c, bias=False)
    with torch.no_grad():
        mm_norm.weight.normal_()
        mm_norm.bias.normal_()
    off_norm, off_lin = nn.LayerNorm(4 * c), nn.Linear(4 * c, 2 * c, bias=False)
    with torch.no_grad():
        off_norm.weight.copy_(unfold_to_concat_order(mm_norm.weight, 0))
        off_norm.bias.copy_(unfold_to_concat_order(mm_norm.bias, 0))
        off_lin.weight.copy_(unfold_to_concat_order(mm_lin.weight, 1))
        torch.testing.assert_close(off_lin(off_norm(off_feats)), mm_lin(mm_norm(mm_feats)))
    with pytest.raises(ValueError, match="multiple of 4"):
        unfold_to_concat_order(torch.zeros(6), 0)


def test_swin_relative_position_index_equals_mmdet_formula():
    """mmdet/mmseg build the index with a flipped 'double step' sequence; our Swin (official
    formula) must hold the same values, so the checkpoint's buffer can be copied as is."""
    from knet_d2.modeling.backbone.swin_layers import WindowAttention

    for ws in (3, 7):
        step = torch.arange(0, (2 * ws - 1) * ws, 2 * ws - 1)[:, None] + torch.arange(ws)[None]
        seq = step.reshape(1, -1)
        mmdet_index = (seq + seq.T).flip(1)
        ours = WindowAttention(8, ws, 2).relative_position_index
        assert torch.equal(ours, mmdet_index)


# ------------------------------------------------------------------ detection (mmdet)
def test_panoptic_r18_cli_round_trip(tmp_path, capsys):
    config = COCO / "panoptic-segmentation/knet_R50_1x.yaml"
    opts = SMALL_DET + R18
    source = build(config, opts, seed=0)
    official = mmdet_layout(source)
    assert "backbone.layer1.0.bn1.num_batches_tracked" in official
    src, dst = tmp_path / "knet_pan.pth", tmp_path / "out" / "knet_pan_d2.pth"
    save_mmcv(src, official)

    rc, out, err = run_cli([src, dst], capsys)
    assert rc == 0, err
    assert "task: panoptic (" in out and "133 rows" in out  # auto-detected, with the reason
    assert "ResNet-18" in out
    assert "num_batches_tracked" not in err and "ignored" in out
    assert "allow-pickle" not in err  # plain mmcv checkpoints load with weights_only=True
    fresh = check_converted(dst, source, config, opts)
    assert_same_det_outputs(source, fresh)


def test_instance_r50_detects_task_and_loads(tmp_path, capsys):
    config = COCO / "instance-segmentation/knet_R50_1x.yaml"
    opts = SMALL_DET + NARROW_R50
    source = build(config, opts, seed=1)
    official = mmdet_layout(source)
    assert "backbone.layer3.5.conv3.weight" in official  # 6 bottlenecks in res4
    src, dst = tmp_path / "knet_ins.pth", tmp_path / "knet_ins_d2.pth"
    save_mmcv(src, {"module." + k: v for k, v in official.items()})  # DDP prefix is stripped

    rc, out, err = run_cli([src, dst], capsys)
    assert rc == 0, err
    assert "task: instance (" in out and "80 rows" in out
    assert "ResNet-50" in out
    fresh = check_converted(dst, source, config, opts)
    assert_same_det_outputs(source, fresh)


DCN_CONFIG = COCO / "instance-segmentation/knet_R101_dcn_ms3x.yaml"


def test_dcn_offsets_convert_unchanged(tmp_path, capsys):
    if DCN_CONFIG.is_file():
        config, opts = DCN_CONFIG, SMALL_DET + NARROW_R50
    else:  # same network from the R50 config with DCN switched on
        config = COCO / "instance-segmentation/knet_R50_1x.yaml"
        opts = SMALL_DET + NARROW_R50 + [
            "MODEL.BACKBONE.NAME", "build_knet_resnet_fpn_backbone",
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]",
        ]
    source = build(config, opts, seed=2)
    sd = source.state_dict()
    assert "backbone.bottom_up.res3.0.conv2_offset.weight" in sd, "config has no DCN"
    official = mmdet_layout(source)
    assert "backbone.layer2.0.conv2.conv_offset.weight" in official
    src, dst = tmp_path / "knet_dcn.pth", tmp_path / "knet_dcn_d2.pth"
    save_mmcv(src, official)

    rc, out, err = run_cli([src, dst], capsys)
    assert rc == 0, err
    assert "+ DCN (res3-res5)" in out
    fresh = check_converted(dst, source, config, opts)
    for k in (k for k in sd if "conv2_offset" in k):
        assert sd[k].abs().sum() > 0  # the randomised offsets are non-zero: a real DCN test
    assert_same_det_outputs(source, fresh)


SWIN_PANOPTIC = COCO / "panoptic-segmentation/swin/knet_swin_L_ms3x.yaml"


def test_swin_panoptic_round_trip(tmp_path, capsys):
    opts = SMALL_DET + SMALL_SWIN
    source = build(SWIN_PANOPTIC, opts, seed=3)
    official = mmdet_layout(source, swin=True)
    assert "backbone.stages.0.blocks.1.attn.w_msa.relative_position_index" in official
    assert "backbone.stages.2.downsample.reduction.weight" in official
    src, dst = tmp_path / "knet_swin.pth", tmp_path / "knet_swin_d2.pth"
    save_mmcv(src, official)

    rc, out, err = run_cli([src, dst], capsys)
    assert rc == 0, err
    assert "task: panoptic (" in out and "Swin (embed 32" in out
    fresh = check_converted(dst, source, SWIN_PANOPTIC, opts)
    # the patch-merging weights were really permuted on the way (and back)
    key = "backbone.bottom_up.layers.0.downsample.reduction.weight"
    assert not torch.equal(official["backbone.stages.0.downsample.reduction.weight"],
                           source.state_dict()[key])
    assert_same_det_outputs(source, fresh)


# ------------------------------------------------------------------ semantic (mmseg)
@pytest.mark.parametrize("head", ["fcn", "pspnet", "deeplabv3", "upernet"])
def test_semantic_resnet_v1c_round_trip(head, tmp_path, capsys):
    config = ADE / f"knet_{head}_R50_512x512_80k.yaml"
    source = build(config, SMALL_SEM, seed=4)
    official = mmseg_layout(source)
    assert "backbone.stem.3.weight" in official and "auxiliary_head.convs.0.conv.weight" in official
    src, dst = tmp_path / f"knet_{head}.pth", tmp_path / f"knet_{head}_d2.pth"
    save_mmcv(src, official)

    rc, out, err = run_cli([src, dst], capsys)
    assert rc == 0, err
    assert "task: semantic (" in out and "ResNetV1c-50" in out
    fresh = check_converted(dst, source, config, SMALL_SEM)
    with torch.no_grad():
        batch = [{"image": image(64, 80), "height": 64, "width": 80}]
        assert torch.equal(source(batch)[0]["sem_seg"], fresh(batch)[0]["sem_seg"])


def test_semantic_swin_round_trip(tmp_path, capsys):
    config = ADE / "swin/knet_upernet_swin_T_512x512_80k.yaml"
    opts = SMALL_SEM + SMALL_SWIN
    source = build(config, opts, seed=5)
    official = mmseg_layout(source, swin=True)
    src, dst = tmp_path / "knet_swin_t.pth", tmp_path / "knet_swin_t_d2.pth"
    save_mmcv(src, official)

    rc, out, err = run_cli([src, dst, "--task", "semantic"], capsys)
    assert rc == 0, err
    assert "task: semantic (given with --task)" in out
    fresh = check_converted(dst, source, config, opts)
    with torch.no_grad():
        batch = [{"image": image(64, 64), "height": 64, "width": 64}]
        assert torch.equal(source(batch)[0]["sem_seg"], fresh(batch)[0]["sem_seg"])


# ------------------------------------------------------------------ CLI behaviour
@pytest.fixture(scope="module")
def small_official():
    """An mmdet panoptic state dict of a small R18 K-Net."""
    model = build(COCO / "panoptic-segmentation/knet_R50_1x.yaml",
                  SMALL_DET + R18, seed=6)
    return mmdet_layout(model)


def test_refuses_to_overwrite(tmp_path, capsys, small_official):
    src, dst = tmp_path / "in.pth", tmp_path / "out.pth"
    save_mmcv(src, small_official)
    dst.write_bytes(b"user data")
    rc, _, err = run_cli([src, dst], capsys)
    assert rc == 2 and "refusing to overwrite" in err
    assert dst.read_bytes() == b"user data"
    rc, _, err = run_cli([src, tmp_path / "out.pkl"], capsys)  # D2 reads .pkl as a raw pickle
    assert rc == 2 and ".pth" in err and not (tmp_path / "out.pkl").exists()
    rc, _, err = run_cli([tmp_path / "missing.pth", tmp_path / "o.pth"], capsys)
    assert rc == 2 and "missing.pth" in err


def test_leftover_keys_fail_and_write_nothing(tmp_path, capsys, small_official):
    sd = dict(small_official)
    sd["rpn_head.ins_downsample.conv.weight"] = torch.zeros(1)  # a module knet_d2 does not have
    sd["roi_head.mask_head.0.fc_objectness.weight"] = torch.zeros(1)
    src, dst = tmp_path / "in.pth", tmp_path / "out.pth"
    save_mmcv(src, sd)
    rc, _, err = run_cli([src, dst], capsys)
    assert rc == 1
    assert "unconverted: rpn_head.ins_downsample.conv.weight" in err
    assert "unconverted: roi_head.mask_head.0.fc_objectness.weight" in err
    assert "2 key(s) could not be converted" in err
    assert not dst.exists()


class _RunsCode:
    """Unpickling this creates a directory: stands for code hidden in a checkpoint."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return os.mkdir, (self.path,)


def test_pickle_needs_allow_pickle(tmp_path, capsys, small_official):
    marker = tmp_path / "code_was_run"
    src = tmp_path / "in.pth"
    torch.save({"meta": {"hook": _RunsCode(str(marker))}, "state_dict": small_official}, src)

    rc, _, err = run_cli([src, tmp_path / "a.pth"], capsys)
    assert rc == 2
    assert "weights_only=True" in err and "execute arbitrary code" in err
    assert "--allow-pickle" in err
    assert not marker.exists() and not (tmp_path / "a.pth").exists()

    rc, _, err = run_cli([src, tmp_path / "b.pth", "--allow-pickle"], capsys)
    assert rc == 0, err
    assert "weights_only=False" in err
    assert marker.exists()  # full unpickling really runs code: that is why it is opt-in
    assert torch.load(tmp_path / "b.pth", weights_only=True)["model"]  # output is plain tensors


def test_task_detection_and_mismatch(small_official, tmp_path, capsys):
    assert detect_task(small_official)[0] == "panoptic"
    sem = {"decode_head.kernel_update_head.0.fc_mask.weight": torch.zeros(2, 2)}
    assert detect_task(sem)[0] == "semantic"
    odd = {k: (v[:7] if k.endswith(("fc_cls.weight", "fc_cls.bias", "conv_seg.weight",
                                    "conv_seg.bias")) else v)
           for k, v in small_official.items()}
    with pytest.raises(ValueError, match="7 classes"):
        detect_task(odd)
    src = tmp_path / "odd.pth"
    save_mmcv(src, odd)
    rc, _, err = run_cli([src, tmp_path / "x.pth"], capsys)
    assert rc == 1 and "pass the task" in err
    rc, out, err = run_cli([src, tmp_path / "y.pth", "--task", "instance"], capsys)  # custom data
    assert rc == 0, err
    rc, _, err = run_cli([src, tmp_path / "z.pth", "--task", "semantic"], capsys)
    assert rc == 1 and "mmseg-layout" in err
    with pytest.raises(ValueError, match="no K-Net keys"):
        convert_knet_state_dict({"fc.weight": torch.zeros(1)}, "instance")


def test_unwrap_and_non_tensor_values():
    t = torch.zeros(1)
    assert unwrap_state_dict({"meta": {}, "state_dict": {"module.a": t}}) == {"a": t}
    assert unwrap_state_dict({"model": {"b": t}}) == {"b": t}
    with pytest.raises(ValueError, match="list"):
        unwrap_state_dict([t])
    res = convert_knet_state_dict(
        {"rpn_head.init_kernels.weight": t, "rpn_head.conv_seg.weight": torch.zeros(80, 1),
         "rpn_head.note": "text"}
    )
    assert set(res.model) == {"kernel_head.init_kernels.weight", "kernel_head.conv_seg.weight"}
    assert "not a tensor" in res.unconverted["rpn_head.note"]


# ------------------------------------------------------------------ full-size configs
FULL_SIZE = [
    # (config, official layout, expected backbone description)
    ("coco/instance-segmentation/knet_R50_1x.yaml", "mmdet", "ResNet-50"),
    ("coco/instance-segmentation/knet_R101_dcn_ms3x.yaml", "mmdet", "ResNet-101 + DCN (res3-res5)"),
    ("coco/panoptic-segmentation/knet_R101_ms3x.yaml", "mmdet", "ResNet-101"),
    ("coco/panoptic-segmentation/knet_R101_dcn_ms3x.yaml", "mmdet",
     "ResNet-101 + DCN (res3-res5)"),
    ("coco/panoptic-segmentation/swin/knet_swin_L_ms3x.yaml", "mmdet", "Swin-L"),
    ("ade20k/semantic-segmentation/knet_deeplabv3_R50_512x512_80k.yaml", "mmseg", "ResNetV1c-50"),
    ("ade20k/semantic-segmentation/swin/knet_upernet_swin_T_512x512_80k.yaml", "mmseg", "Swin-T"),
    ("ade20k/semantic-segmentation/swin/knet_upernet_swin_L_640x640_80k.yaml", "mmseg", "Swin-L"),
]


@pytest.mark.slow
@pytest.mark.parametrize("config,layout,backbone", FULL_SIZE)
def test_full_size_configs_convert_every_key(config, layout, backbone):
    """The real-size networks of MODEL_ZOO.md: every official name and shape has a rule."""
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
    model = build_model(load_config(REPO_ROOT / "configs" / config, opts))
    swin = "swin" in config
    official = mmdet_layout(model, swin) if layout == "mmdet" else mmseg_layout(model, swin)
    res = convert_knet_state_dict(official)
    assert not res.unconverted
    assert backbone in res.source
    expected = model.state_dict()
    assert set(res.model) == set(expected)
    for k, v in res.model.items():
        assert v.shape == expected[k].shape, k
