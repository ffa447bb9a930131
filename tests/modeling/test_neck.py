"""knet_d2.modeling.neck: LocalizationFPN against the official chain of x2 upsamplings, odd
sizes, structure, init and the positional encoding on P5. Tiny dims
(tests/helpers/knet_parts.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from knet_d2.modeling import SinePositionalEncoding
from tests.helpers.knet_parts import C, fpn_feats, make_neck

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def _up(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _assert_official_chain(neck, feats, loc, sem, last_up=lambda x: x):
    """``(loc, sem)`` equal the official chain of convs and x2 upsamplings of ``neck``'s own
    layers; ``last_up`` is applied to the p3..p5 branches (identity at stride 8, x2 at 4)."""
    lv = neck.convs_all_levels
    with torch.no_grad():
        p5 = feats["p5"] + SinePositionalEncoding(C // 2)(feats["p5"])
        s = (
            lv[0].conv0(feats["p2"])
            + last_up(lv[1].conv0(feats["p3"]))
            + last_up(lv[2].conv1(_up(lv[2].conv0(feats["p4"]))))
            + last_up(lv[3].conv2(_up(lv[3].conv1(_up(lv[3].conv0(p5))))))
        )
        torch.testing.assert_close(loc, neck.conv_pred(s))
        torch.testing.assert_close(sem, neck.aux_convs[0](s))


@pytest.mark.parametrize("b,h,w", [(1, 96, 160), (2, 128, 64), (3, 64, 96)])
def test_neck_padded_matches_official_x2_chain(b, h, w):
    neck = make_neck().eval()
    feats = fpn_feats(b, h, w)
    with torch.no_grad():
        loc, sem = neck(feats)
    assert loc.shape == sem.shape == (b, C, h // 8, w // 8)
    _assert_official_chain(neck, feats, loc, sem)
    assert not torch.allclose(loc, sem)


@pytest.mark.parametrize("b,h,w", [(1, 97, 131), (2, 45, 77), (3, 33, 70)])
def test_neck_unpadded_odd_sizes(b, h, w):
    neck = make_neck()
    feats = fpn_feats(b, h, w)
    loc, sem = neck(feats)
    assert loc.shape == sem.shape == (b, C) + tuple(feats["p3"].shape[-2:])
    assert torch.isfinite(loc).all() and (loc >= 0).all()  # ends with ReLU


def test_neck_structure_init_and_pe_level():
    neck = make_neck()
    names = {n for n, _ in neck.named_parameters()}
    convs = {n.rsplit(".conv.weight", 1)[0] for n in names if n.endswith(".conv.weight")}
    assert convs == {
        "convs_all_levels.0.conv0", "convs_all_levels.1.conv0", "convs_all_levels.2.conv0",
        "convs_all_levels.2.conv1", "convs_all_levels.3.conv0", "convs_all_levels.3.conv1",
        "convs_all_levels.3.conv2", "conv_pred", "aux_convs.0",
    }
    assert neck.convs_all_levels[0].conv0.conv.stride == (2, 2)
    assert neck.convs_all_levels[3].conv1.conv.stride == (1, 1)
    assert neck.conv_pred.conv.kernel_size == (1, 1)
    assert all(m.bias is None for m in neck.modules() if isinstance(m, nn.Conv2d))
    assert all(isinstance(m.gn, nn.GroupNorm) and m.gn.num_groups == 32
               for m in neck.modules() if hasattr(m, "gn"))
    big = make_neck(channels=256)
    w = big.convs_all_levels[3].conv0.conv.weight
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4

    # PE only on P5: a neck without PE differs only through P5
    no_pe = make_neck(pos_encoding_level=-1)
    no_pe.load_state_dict(neck.state_dict())
    feats = fpn_feats(1, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(neck(feats)[0], no_pe(feats)[0])
        feats_pe = dict(feats, p5=feats["p5"] + SinePositionalEncoding(C // 2)(feats["p5"]))
        torch.testing.assert_close(neck(feats)[0], no_pe(feats_pe)[0])


def test_neck_out_stride_4_fuses_at_p2_with_the_same_parameters():
    """OUT_STRIDE 4: level 0 keeps P2's resolution (stride-1 conv), every coarser level ends
    with one more x2 upsampling; the parameter names and shapes are those of the official
    stride-8 layout, so its weights load into either."""
    neck8, neck4 = make_neck(), make_neck(out_stride=4)
    assert (neck8.out_stride, neck4.out_stride) == (8, 4)
    assert make_neck(out_stride=0).out_stride == 8
    shapes8 = {k: v.shape for k, v in neck8.state_dict().items()}
    assert {k: v.shape for k, v in neck4.state_dict().items()} == shapes8
    neck4.load_state_dict(neck8.state_dict())
    assert neck4.convs_all_levels[0].conv0.conv.stride == (1, 1)
    neck4.eval()
    b, h, w = 2, 64, 96
    feats = fpn_feats(b, h, w)
    with torch.no_grad():
        loc, sem = neck4(feats)
    assert loc.shape == sem.shape == (b, C, h // 4, w // 4)
    _assert_official_chain(neck4, feats, loc, sem, last_up=_up)


def test_neck_out_stride_must_be_one_of_the_first_two_levels():
    with pytest.raises(ValueError, match=r"out_stride 16 must be 8 .* or 4"):
        make_neck(out_stride=16)
