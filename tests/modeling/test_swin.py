"""Swin Transformer backbone: shapes, official parameter names, configs (full K-Net models on
CPU) and optimizer groups. Its building blocks are tested in test_swin_layers.py."""
import math
import re

import pytest
import torch
from detectron2.modeling import FPN, build_model
from detectron2.structures import BitMasks, Instances

from knet_d2.modeling.backbone.swin import SwinTransformer
from knet_d2.modeling.semantic import FCNHead, UPerHead
from knet_d2.solver import build_knet_optimizer
from tests.helpers.paths import REPO_ROOT, load_config

PAN_CFG = REPO_ROOT / "configs/coco/panoptic-segmentation/swin/knet_swin_L_ms3x.yaml"
ADE_DIR = REPO_ROOT / "configs/ade20k/semantic-segmentation/swin"
ADE_CFGS = [ADE_DIR / f"knet_upernet_swin_{m}_{c}_80k.yaml"
            for m in ("T", "L") for c in ("512x512", "640x640")]
# Narrow Swin (2 blocks in stage 2 -> one shifted block) for building whole models on a CPU.
TINY_SWIN = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
             "MODEL.SWIN.EMBED_DIM", "16", "MODEL.SWIN.DEPTHS", "[1, 1, 2, 1]",
             "MODEL.SWIN.NUM_HEADS", "[1, 2, 2, 4]", "MODEL.SWIN.WINDOW_SIZE", "4",
             "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
TINY_PAN = TINY_SWIN + [
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.KNET.HIDDEN_DIM", "32",
    "MODEL.KNET.NECK.CONV_DIM", "32", "MODEL.KNET.NUM_PROPOSALS", "6", "MODEL.KNET.FFN_DIM", "64",
    "MODEL.KNET.NUM_HEADS", "4", "MODEL.KNET.NUM_STAGES", "2",
    "MODEL.KNET.NUM_THING_CLASSES", "3", "MODEL.KNET.NUM_STUFF_CLASSES", "2",
]
TINY_SEM = TINY_SWIN + [
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5", "MODEL.SEM_SEG_HEAD.NORM", "BN",
    "MODEL.KNET.SEM.CHANNELS", "32", "MODEL.KNET.SEM.UPDATOR_CHANNELS", "16",
    "MODEL.KNET.SEM.AUX_CHANNELS", "16", "MODEL.KNET.FFN_DIM", "64", "MODEL.KNET.NUM_HEADS", "4",
    "MODEL.KNET.NUM_STAGES", "2",
]


def tiny_swin(**kw) -> SwinTransformer:
    args = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), window_size=4)
    args.update(kw)
    return SwinTransformer(**args)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("hw", [(100, 130), (64, 64), (33, 250)])
def test_output_keys_shapes_strides(hw):
    torch.manual_seed(0)
    m = tiny_swin().eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, *hw))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    spec = m.output_shape()
    h, w = hw
    for i, name in enumerate(out):
        stride = 4 * 2**i
        assert spec[name].stride == stride and spec[name].channels == 16 * 2**i
        # ceil at every halving == ceil(H / stride)
        assert out[name].shape == (2, 16 * 2**i, math.ceil(h / stride), math.ceil(w / stride))
        assert torch.isfinite(out[name]).all()
    assert m.size_divisibility == 32


def test_out_features_subset_only_builds_those_norms():
    m = tiny_swin(out_features=["res3", "res5"]).eval()
    assert hasattr(m, "norm1") and hasattr(m, "norm3")
    assert not hasattr(m, "norm0") and not hasattr(m, "norm2")
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert list(out) == ["res3", "res5"] and set(m.output_shape()) == {"res3", "res5"}
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        tiny_swin(out_features=["res6"])
    with pytest.raises(ValueError, match="same length"):
        tiny_swin(num_heads=(1, 2, 2))


def test_batch_items_are_independent():
    """Batching (windows of all images in one tensor) must not mix images."""
    torch.manual_seed(0)
    m = tiny_swin().eval()
    x = torch.randn(2, 3, 72, 88)
    with torch.no_grad():
        both = m(x)
        single = m(x[1:])
    for k in both:
        torch.testing.assert_close(both[k][1:], single[k], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- names
def test_state_dict_follows_official_naming():
    m = tiny_swin(ape=True)
    keys = set(m.state_dict())
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
             "attn.proj.weight", "attn.proj.bias", "attn.relative_position_bias_table",
             "attn.relative_position_index", "norm2.weight", "norm2.bias",
             "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    expected = {"absolute_pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                "patch_embed.norm.weight", "patch_embed.norm.bias"}
    for i, depth in enumerate((1, 1, 2, 1)):
        expected |= {f"layers.{i}.blocks.{j}.{p}" for j in range(depth) for p in block}
        if i < 3:
            expected |= {f"layers.{i}.downsample.reduction.weight",
                         f"layers.{i}.downsample.norm.weight", f"layers.{i}.downsample.norm.bias"}
        expected |= {f"norm{i}.weight", f"norm{i}.bias"}
    assert keys == expected
    sd = m.state_dict()
    assert sd["layers.2.blocks.1.attn.relative_position_bias_table"].shape == (49, 2)
    assert sd["layers.1.downsample.reduction.weight"].shape == (64, 128)
    assert sd["absolute_pos_embed"].shape == (1, 16, 56, 56)
    idx = sd["layers.0.blocks.0.attn.relative_position_index"]
    assert idx.shape == (16, 16) and idx.dtype == torch.int64
    assert idx[0, 0] == idx.diagonal().max() == 3 * 7 + 3  # zero offset = table centre
    assert not any(re.search(r"attn_mask", k) for k in keys)
    assert "absolute_pos_embed" not in tiny_swin(ape=False).state_dict()


def test_drop_path_rates_and_eval_determinism():
    torch.manual_seed(0)
    m = tiny_swin(drop_path_rate=0.5, drop_rate=0.1, attn_drop_rate=0.1)
    rates = [blk.drop_path.drop_prob for layer in m.layers for blk in layer.blocks]
    assert rates == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    x = torch.randn(2, 3, 64, 64)
    m.eval()
    with torch.no_grad():
        a, b = m(x), m(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    m.train()
    with torch.no_grad():
        c, d = m(x), m(x)
    assert not torch.allclose(c["res5"], d["res5"])


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = tiny_swin(drop_path_rate=0.0).train()
    ckpt = tiny_swin(drop_path_rate=0.0, use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 48, 40)
    for m in (plain, ckpt):
        sum(v.square().mean() for v in m(x).values()).backward()
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=n)


# ----------------------------------------------------------------------------- configs
def test_panoptic_swin_l_config_matches_official():
    cfg = load_config(PAN_CFG)
    s = cfg.MODEL.SWIN
    assert cfg.MODEL.BACKBONE.NAME == "build_knet_swin_fpn_backbone"
    assert (s.EMBED_DIM, list(s.DEPTHS), list(s.NUM_HEADS)) == (192, [2, 2, 18, 2],
                                                                [6, 12, 24, 48])
    assert (s.WINDOW_SIZE, s.DROP_PATH_RATE, s.APE, s.PATCH_NORM) == (7, 0.2, False, True)
    assert list(cfg.MODEL.FPN.IN_FEATURES) == ["res2", "res3", "res4", "res5"]
    assert cfg.MODEL.WEIGHTS == "swin_large_patch4_window7_224_22k.pkl"
    assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.28, 103.53]
    sol = cfg.SOLVER
    assert (sol.IMS_PER_BATCH, sol.BASE_LR, sol.OPTIMIZER) == (32, 1e-4, "ADAMW")
    assert sol.WEIGHT_DECAY == sol.WEIGHT_DECAY_NORM == sol.WEIGHT_DECAY_EMBED == 0.05
    # half the 16-image ms-3x schedule of the R50 config
    r50 = load_config(REPO_ROOT / "configs/coco/panoptic-segmentation/knet_R50_ms3x.yaml")
    assert sol.MAX_ITER * 2 == r50.SOLVER.MAX_ITER
    assert [2 * x for x in sol.STEPS] == list(r50.SOLVER.STEPS)
    assert cfg.INPUT.MIN_SIZE_TRAIN == r50.INPUT.MIN_SIZE_TRAIN == (640, 800)
    assert cfg.MODEL.KNET.NUM_STUFF_CLASSES == 53


@pytest.mark.parametrize("path", ADE_CFGS, ids=lambda p: p.name)
def test_ade_swin_configs_match_official(path):
    cfg = load_config(path)
    s, sol = cfg.MODEL.SWIN, cfg.SOLVER
    large = "_L_" in path.name
    crop = 640 if "640" in path.name else 512
    assert cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"
    assert cfg.MODEL.BACKBONE.NAME == "build_swin_backbone"
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "KNetSemSegHead"
    assert cfg.MODEL.KNET.SEM.GENERATE_HEAD == "UPerNet"
    assert (s.EMBED_DIM, list(s.DEPTHS)) == ((192, [2, 2, 18, 2]) if large else (96, [2, 2, 6, 2]))
    assert (s.WINDOW_SIZE, s.PRETRAIN_IMG_SIZE) == (7, 224)
    assert s.DROP_PATH_RATE == (0.4 if large and crop == 640 else 0.3)
    assert cfg.MODEL.WEIGHTS == ("swin_large_patch4_window7_224_22k.pkl" if large
                                 else "swin_tiny_patch4_window7_224.pkl")
    assert (sol.BASE_LR, sol.WEIGHT_DECAY, sol.OPTIMIZER) == (6e-5, 5e-4, "ADAMW")
    assert sol.WEIGHT_DECAY_NORM == sol.WEIGHT_DECAY_EMBED == 0.0
    assert sol.BACKBONE_MULTIPLIER == 1.0 and sol.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    assert (sol.MAX_ITER, tuple(sol.STEPS)) == (80000, (60000, 72000))
    assert tuple(cfg.INPUT.CROP.SIZE) == (crop, crop) and cfg.INPUT.MIN_SIZE_TEST == crop
    assert cfg.INPUT.MAX_SIZE_TRAIN == cfg.INPUT.MAX_SIZE_TEST == 2048


def _pan_input(h, w, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(len(classes), h, w, dtype=torch.bool)
    for i in range(len(classes)):
        masks[i, 8 * i:8 * i + 20, 4 * i:4 * i + 24] = True
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(masks)
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return {"image": image, "instances": inst, "height": h, "width": w}


def test_scaled_down_panoptic_swin_knet_trains_and_infers():
    torch.manual_seed(0)
    model = build_model(load_config(PAN_CFG, TINY_PAN))
    assert isinstance(model.backbone, FPN)
    assert isinstance(model.backbone.bottom_up, SwinTransformer)
    assert {k: v.stride for k, v in model.backbone.output_shape().items()} == {
        "p2": 4, "p3": 8, "p4": 16, "p5": 32}
    assert model.backbone.fpn_lateral5.in_channels == 128  # 8 x EMBED_DIM
    model.train()
    losses = model([_pan_input(61, 77, [0, 3]), _pan_input(64, 50, [1])])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    g = model.backbone.bottom_up.layers[0].blocks[0].attn.qkv.weight.grad
    assert g is not None and g.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([_pan_input(61, 77, [0])])
    seg, segments = out[0]["panoptic_seg"]
    assert seg.shape == (61, 77)
    assert out[0]["sem_seg"].shape == (5, 61, 77)


@pytest.mark.parametrize("path", ADE_CFGS, ids=lambda p: p.name)
def test_scaled_down_semantic_swin_upernet_builds_and_runs(path):
    torch.manual_seed(0)
    model = build_model(load_config(path, TINY_SEM))
    head = model.sem_seg_head
    assert isinstance(model.backbone, SwinTransformer)
    assert isinstance(head.kernel_generate_head, UPerHead)
    assert head.kernel_generate_head.in_channels == [16, 32, 64, 128]
    assert isinstance(head.auxiliary_head, FCNHead) and head.auxiliary_head.in_channels == [64]
    if "T_512" not in path.name:
        return  # one forward/backward is enough
    model.train()
    imgs = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8) for _ in range(2)]
    labels = [torch.randint(0, 5, (64, 80)) for _ in range(2)]
    losses = model([{"image": i, "sem_seg": t} for i, t in zip(imgs, labels)])
    assert {"loss_ce_s0", "loss_ce_s1", "loss_ce_s2", "loss_aux_ce"} == set(losses)
    sum(losses.values()).backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([{"image": imgs[0][:, :50, :70], "height": 50, "width": 70}])
    assert out[0]["sem_seg"].shape == (5, 50, 70)


# ----------------------------------------------------------------------------- optimizer
def _groups_by_name(model, optimizer):
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in optimizer.param_groups:
        for p in g["params"]:
            out[by_id[id(p)]] = (g["lr"], g["weight_decay"])
    return out


def test_semantic_swin_param_groups_exempt_tables_and_norms():
    cfg = load_config(ADE_CFGS[0], TINY_SEM + ["MODEL.SWIN.APE", "True"])
    model = build_model(cfg)
    groups = _groups_by_name(model, build_knet_optimizer(cfg, model))
    assert set(groups) == {n for n, p in model.named_parameters() if p.requires_grad}
    ln_params = {f"{mn}.{pn}" for mn, m in model.named_modules()
                 if isinstance(m, torch.nn.LayerNorm) for pn, _ in m.named_parameters()}
    assert any(n.startswith("backbone.norm0") for n in ln_params)
    assert any("kernel_update_head" in n for n in ln_params)  # the heads' LNs too
    for name, (lr, wd) in groups.items():
        assert lr == pytest.approx(6e-5), name
        exempt = ("relative_position_bias_table" in name or "absolute_pos_embed" in name
                  or name in ln_params)
        if exempt:
            assert wd == 0.0, name
    assert groups["backbone.absolute_pos_embed"][1] == 0.0
    assert groups["backbone.layers.2.blocks.1.attn.relative_position_bias_table"][1] == 0.0
    assert groups["backbone.layers.0.blocks.0.attn.qkv.weight"][1] == 5e-4
    assert groups["backbone.layers.0.downsample.reduction.weight"][1] == 5e-4
    assert groups["sem_seg_head.kernel_generate_head.conv_seg.weight"][1] == 5e-4


def test_panoptic_swin_param_groups_decay_everything():
    cfg = load_config(PAN_CFG, TINY_PAN)
    model = build_model(cfg)
    groups = _groups_by_name(model, build_knet_optimizer(cfg, model))
    table = "backbone.bottom_up.layers.0.blocks.0.attn.relative_position_bias_table"
    assert groups[table] == (pytest.approx(2.5e-5), 0.05)
    assert groups["backbone.bottom_up.norm0.weight"] == (pytest.approx(2.5e-5), 0.05)
    assert groups["backbone.fpn_lateral2.weight"] == (pytest.approx(2.5e-5), 0.05)
    head = [v for n, v in groups.items() if not n.startswith("backbone.")]
    assert head and all(v == (pytest.approx(1e-4), 0.05) for v in head)
