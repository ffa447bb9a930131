"""Pure-PyTorch deformable ResNet (R101-DCN) against D2's DeformBottleneckBlock and a reference."""
import importlib.util
import itertools
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone import resnet as d2_resnet
from torch.nn.modules.utils import _pair

from knet_d2.modeling.backbone.deform_resnet import (
    DeformBottleneckBlock,
    DeformConv2d,
    build_knet_resnet_backbone,
)
from tests.helpers.paths import REPO_ROOT, load_config

CONFIGS = {
    "panoptic": REPO_ROOT / "configs/coco/panoptic-segmentation/knet_R101_dcn_ms3x.yaml",
    "instance": REPO_ROOT / "configs/coco/instance-segmentation/knet_R101_dcn_ms3x.yaml",
}


@pytest.fixture
def real_d2_deform(monkeypatch):
    """D2's own DeformConv / ModulatedDeformConv classes, usable without ``detectron2._C``.

    The installed detectron2 replaces them by placeholders that raise ImportError because its
    ``_C`` extension is missing. Re-running ``detectron2/layers/deform_conv.py`` with an empty
    stand-in for ``_C`` gives the real classes (construction needs no compiled code; the CPU
    forward of ``DeformConv`` calls torchvision). They are patched into D2's resnet module, so
    D2's ``DeformBottleneckBlock`` / ``build_resnet_backbone`` can be built for comparison.
    """
    monkeypatch.setitem(sys.modules, "detectron2._C", types.ModuleType("detectron2._C"))
    spec = importlib.util.find_spec("detectron2.layers.deform_conv")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(d2_resnet, "DeformConv", module.DeformConv)
    monkeypatch.setattr(d2_resnet, "ModulatedDeformConv", module.ModulatedDeformConv)
    return module


def _randomise_(module, seed=0):
    """Random values for every float tensor (incl. the zero-initialised offsets, BN stats)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            v = torch.randn(t.shape, generator=g) * 0.2
            if name.endswith("running_var"):
                v = v.abs() + 0.5
            t.copy_(v)
    return module


BLOCK_CASES = [
    # in, out, bottleneck, stride, num_groups, stride_in_1x1, dilation, modulated, deform_groups
    (8, 16, 4, 2, 1, False, 1, False, 1),
    (16, 16, 8, 1, 2, True, 2, True, 2),
    (8, 16, 8, 1, 1, False, 1, True, 1),
    (16, 16, 8, 2, 2, False, 1, False, 2),
]


def _block_kwargs(case):
    cin, cout, cb, stride, groups, s1x1, dil, mod, dg = case
    return dict(in_channels=cin, out_channels=cout, bottleneck_channels=cb, stride=stride,
                num_groups=groups, norm="BN", stride_in_1x1=s1x1, dilation=dil,
                deform_modulated=mod, deform_num_groups=dg)


@pytest.mark.parametrize("case", BLOCK_CASES)
def test_block_has_d2_names_shapes_and_init(real_d2_deform, case):
    kwargs = _block_kwargs(case)
    torch.manual_seed(3)
    ref = d2_resnet.DeformBottleneckBlock(**kwargs)
    torch.manual_seed(3)
    ours = DeformBottleneckBlock(**kwargs)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    for k, v in ref_sd.items():
        assert our_sd[k].shape == v.shape, k
        assert torch.equal(our_sd[k], v), k  # same RNG draws in the same order
    per_group = 27 if kwargs["deform_modulated"] else 18
    assert ours.conv2_offset.out_channels == per_group * kwargs["deform_num_groups"]
    assert torch.all(ours.conv2_offset.weight == 0) and torch.all(ours.conv2_offset.bias == 0)
    assert ours.conv2.bias is None and ours.conv2.norm is not None
    for attr in ("stride", "padding", "dilation"):
        assert getattr(ours.conv2, attr) == _pair(getattr(ref.conv2, attr)), attr
    assert ours.conv2.groups == ref.conv2.groups
    assert ours.conv2.deformable_groups == ref.conv2.deformable_groups


def test_dcnv1_block_forward_equals_d2_cpu_path(real_d2_deform):
    """D2's DeformConv on CPU calls torchvision with the same offsets: outputs must agree."""
    kwargs = _block_kwargs((8, 16, 8, 2, 1, False, 1, False, 1))
    ref = _randomise_(d2_resnet.DeformBottleneckBlock(**kwargs)).eval()
    ours = DeformBottleneckBlock(**kwargs).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
        assert ours.conv2_offset(F.relu(ours.conv1(x))).abs().max() > 0.5  # really deformed


@pytest.mark.parametrize("modulated", [False, True])
def test_zero_offsets_equal_plain_bottleneck(modulated):
    torch.manual_seed(0)
    kwargs = _block_kwargs((8, 16, 4, 2, 2, False, 2, modulated, 2))
    ours = DeformBottleneckBlock(**kwargs).eval()
    _randomise_(ours)
    with torch.no_grad():
        ours.conv2_offset.weight.zero_()
        ours.conv2_offset.bias.zero_()
    kwargs.pop("deform_modulated"), kwargs.pop("deform_num_groups")
    plain = d2_resnet.BottleneckBlock(**kwargs).eval()
    sd = {k: v for k, v in ours.state_dict().items() if "conv2_offset" not in k}
    if modulated:  # mask = sigmoid(0) = 0.5 scales every sample
        sd["conv2.weight"] = sd["conv2.weight"] * 0.5
    plain.load_state_dict(sd)
    x = torch.randn(2, 8, 10, 12)
    with torch.no_grad():
        assert torch.allclose(ours(x), plain(x), atol=1e-5)


def _reference_deform_conv(x, offset, weight, stride, padding, dilation, mask=None):
    """Slow DCN: per output pixel and kernel point, bilinear sampling with zeros outside.

    Offset channels of deformable group g, kernel point k (row-major): 2k = dy, 2k + 1 = dx.
    """
    b, c, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups = c // cin_g
    kk = kh * kw
    dg = offset.shape[1] // (2 * kk)
    ho, wo = offset.shape[-2:]
    xpad = F.pad(x, (1, 1, 1, 1))  # one zero ring: corners just outside read 0

    def sample(bi, chans, y, xx):
        if y <= -1 or y >= h or xx <= -1 or xx >= w:
            return torch.zeros(len(chans), dtype=x.dtype)
        y0, x0 = int(torch.floor(y)), int(torch.floor(xx))
        ly, lx = y - y0, xx - x0
        v = xpad[bi, chans]
        return ((1 - ly) * (1 - lx) * v[:, y0 + 1, x0 + 1] + (1 - ly) * lx * v[:, y0 + 1, x0 + 2]
                + ly * (1 - lx) * v[:, y0 + 2, x0 + 1] + ly * lx * v[:, y0 + 2, x0 + 2])

    cols = torch.zeros(b, c, kk, ho, wo, dtype=x.dtype)
    cpg = c // dg
    for bi, g, oy, ox, i, j in itertools.product(
        range(b), range(dg), range(ho), range(wo), range(kh), range(kw)
    ):
        k = i * kw + j
        dy = offset[bi, g * 2 * kk + 2 * k, oy, ox]
        dx = offset[bi, g * 2 * kk + 2 * k + 1, oy, ox]
        y = oy * stride - padding + i * dilation + dy
        xx = ox * stride - padding + j * dilation + dx
        chans = list(range(g * cpg, (g + 1) * cpg))
        m = 1.0 if mask is None else mask[bi, g * kk + k, oy, ox]
        cols[bi, g * cpg:(g + 1) * cpg, k, oy, ox] = m * sample(bi, chans, y, xx)
    cout_g = cout // groups
    outs = [
        torch.einsum("ock,bckhw->bohw", weight[gi * cout_g:(gi + 1) * cout_g].flatten(2),
                     cols[:, gi * cin_g:(gi + 1) * cin_g])
        for gi in range(groups)
    ]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize(
    "stride,dilation,groups,deform_groups,modulated",
    [(1, 1, 1, 1, False), (2, 1, 1, 1, True), (1, 2, 2, 2, False), (2, 2, 2, 2, True)],
)
def test_deform_conv_matches_bilinear_reference(stride, dilation, groups, deform_groups,
                                                modulated):
    g = torch.Generator().manual_seed(stride * 10 + dilation + groups + deform_groups)
    conv = DeformConv2d(4, 6, 3, stride=stride, padding=dilation, dilation=dilation,
                        groups=groups, deformable_groups=deform_groups).double()
    x = torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64)
    ho = (6 + 2 * dilation - 2 * dilation - 1) // stride + 1
    wo = (7 + 2 * dilation - 2 * dilation - 1) // stride + 1
    # offsets up to +-3 px: many samples fall partly or fully outside the image
    offset = (torch.rand(2, 18 * deform_groups, ho, wo, generator=g, dtype=torch.float64)
              - 0.5) * 6
    mask = (torch.rand(2, 9 * deform_groups, ho, wo, generator=g, dtype=torch.float64)
            if modulated else None)
    with torch.no_grad():
        out = conv(x, offset, mask)
    ref = _reference_deform_conv(x, offset, conv.weight.detach(), stride, dilation, dilation, mask)
    assert out.shape == (2, 6, ho, wo)
    assert torch.allclose(out, ref, atol=1e-10)
    # the (dy, dx) order matters: swapping the two channels of every kernel point changes it
    swapped = offset.view(2, -1, 2, ho, wo).flip(2).reshape_as(offset)
    with torch.no_grad():
        assert not torch.allclose(conv(x, swapped, mask), ref, atol=1e-3)


def test_deform_conv_gradcheck_and_bad_offset_channels():
    g = torch.Generator().manual_seed(1)
    conv = DeformConv2d(2, 2, 3, padding=1, deformable_groups=2, bias=True).double()
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    off = (torch.rand(1, 36, 4, 4, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    mask = torch.rand(1, 18, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, o, m: conv(a, o, m), (x, off, mask))
    with pytest.raises(ValueError, match="offset has 18 channels"):
        conv(x, off[:, :18])
    with pytest.raises(ValueError, match="mask has 9 channels"):
        conv(x, off, mask[:, :9])


def test_reduced_precision_and_empty_batch():
    conv = DeformConv2d(4, 4, 3, padding=1)
    x, off = torch.randn(1, 4, 5, 5), torch.randn(1, 18, 5, 5)
    out = conv(x.bfloat16(), off.bfloat16())  # torchvision has no bf16 CPU kernel
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), conv(x.bfloat16().float(), off.bfloat16().float()),
                          atol=0.05, rtol=0.02)
    assert conv(torch.zeros(0, 4, 5, 5), torch.zeros(0, 18, 5, 5)).shape == (0, 4, 5, 5)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradients_flow_to_offsets(modulated):
    torch.manual_seed(0)
    block = DeformBottleneckBlock(**_block_kwargs((8, 16, 8, 2, 1, False, 1, modulated, 1)))
    block.train()
    x = torch.randn(2, 8, 9, 9)
    (block(x) ** 2).sum().backward()
    for p in (block.conv2_offset.weight, block.conv2_offset.bias, block.conv2.weight,
              block.conv1.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # one SGD step on the offsets moves the sampling points: the output changes
    with torch.no_grad():
        before = block.eval()(x)
        block.conv2_offset.weight -= 10.0 * block.conv2_offset.weight.grad
        assert not torch.allclose(block(x), before)


def _resnet_cfg(deform_on, depth=50, norm="FrozenBN", freeze_at=2, modulated=False):
    cfg = get_cfg()
    r = cfg.MODEL.RESNETS
    r.DEPTH, r.NORM, r.STRIDE_IN_1X1 = depth, norm, False
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    r.DEFORM_ON_PER_STAGE, r.DEFORM_MODULATED = deform_on, modulated
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    return cfg


@pytest.mark.parametrize("deform_on,modulated", [
    ([False, True, True, True], False),
    ([False, False, False, True], True),
    ([False, False, False, False], False),
])
def test_builder_equals_d2_builder(real_d2_deform, deform_on, modulated):
    cfg = _resnet_cfg(deform_on, modulated=modulated)
    shape = ShapeSpec(channels=3)
    torch.manual_seed(7)
    ref = d2_resnet.build_resnet_backbone(cfg, shape)
    torch.manual_seed(7)
    ours = build_knet_resnet_backbone(cfg, shape)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    assert all(torch.equal(our_sd[k], v) for k, v in ref_sd.items())
    assert [(n, p.requires_grad) for n, p in ours.named_parameters()] == [
        (n, p.requires_grad) for n, p in ref.named_parameters()]
    assert ours.output_shape() == ref.output_shape()
    offsets = {k.split(".")[0] for k in our_sd if "conv2_offset" in k}
    assert offsets == {f"res{i + 2}" for i, on in enumerate(deform_on) if on}
    for i, stage in enumerate([ours.res2, ours.res3, ours.res4, ours.res5]):
        want = DeformBottleneckBlock if deform_on[i] else d2_resnet.BottleneckBlock
        assert all(type(b) is want for b in stage)
    if not modulated:  # D2's CPU DeformConv path exists only for DCNv1
        _randomise_(ref)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            a, b = ref.eval()(x), ours.eval()(x)
        assert all(torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-4) for k in a)


def test_builder_dcn_r50_layout_and_freezing():
    model = build_knet_resnet_backbone(_resnet_cfg([False, True, True, True]), ShapeSpec(3))
    names = [k for k in model.state_dict() if "conv2_offset.weight" in k]
    assert len(names) == 4 + 6 + 3  # every block of res3 (4), res4 (6), res5 (3)
    assert all(k.startswith(("res3.", "res4.", "res5.")) for k in names)
    assert model.res3[0].conv2_offset.out_channels == 18
    assert model.res3[0].conv2.stride == (2, 2) and model.res3[0].conv1.stride == (1, 1)
    assert isinstance(model.res3[0].conv2.norm, FrozenBatchNorm2d)
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "res2"}  # FREEZE_AT 2
    assert model.res4[0].conv2_offset.weight.requires_grad
    with pytest.raises(ValueError, match="R18/R34"):
        build_knet_resnet_backbone(_resnet_cfg([False, True, False, False], depth=18), ShapeSpec(3))


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_dcn_configs_load_and_build(task):
    cfg = load_config(CONFIGS[task])
    r = cfg.MODEL.RESNETS
    assert r.DEPTH == 101 and list(r.DEFORM_ON_PER_STAGE) == [False, True, True, True]
    assert r.DEFORM_MODULATED is False and r.DEFORM_NUM_GROUPS == 1
    assert cfg.MODEL.BACKBONE.NAME == "build_knet_resnet_fpn_backbone"
    assert cfg.INPUT.FORMAT == "RGB" and r.STRIDE_IN_1X1 is False
    # scaled down for CPU: R50 body, same DCN layout
    cfg = load_config(CONFIGS[task], ["MODEL.RESNETS.DEPTH", "50", "MODEL.DEVICE", "cpu"])
    backbone = build_backbone(cfg).eval()
    assert isinstance(backbone.bottom_up.res3[0], DeformBottleneckBlock)
    assert not hasattr(backbone.bottom_up.res2[0], "conv2_offset")
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        f"p{i}": (1, 256, 64 // 2**i, 96 // 2**i) for i in range(2, 6)}


def test_dcn_model_inference_on_cpu():
    cfg = load_config(CONFIGS["panoptic"], [
        "MODEL.RESNETS.DEPTH", "50", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        "MODEL.KNET.NUM_PROPOSALS", "10", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
    ])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 64, "width": 80}])
    assert "panoptic_seg" in out and out["panoptic_seg"][0].shape == (64, 80)
    assert out["sem_seg"].shape[-2:] == (64, 80)
