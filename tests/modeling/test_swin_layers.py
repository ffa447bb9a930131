"""Swin Transformer building blocks (knet_d2/modeling/backbone/swin_layers.py): shifted-window
attention vs a slow reference, the shifted-window mask and the patch-merging order."""
import math

import pytest
import torch
import torch.nn.functional as F

from knet_d2.modeling.backbone.swin_layers import PatchMerging, SwinBlock, shifted_window_mask


# ----------------------------------------------------------------------------- attention
def _reference_block(blk: SwinBlock, x: torch.Tensor, h: int, w: int, use_mask: bool = True):
    """Slow explicit Swin block: loop over images, windows, heads and token pairs.

    The shifted-window rule is written independently of the 3x3-region trick: after the
    cyclic shift, two tokens of a window may attend to each other only if neither or both were
    wrapped around along rows, and likewise along columns.
    """
    ws, s = blk.window_size, blk.shift_size
    attn = blk.attn
    nh, c = attn.num_heads, x.shape[-1]
    d = c // nh
    b = x.shape[0]
    y = F.layer_norm(x, (c,), blk.norm1.weight, blk.norm1.bias).view(b, h, w, c)
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    y = F.pad(y, (0, 0, 0, wp - w, 0, hp - h))
    y = torch.roll(y, (-s, -s), (1, 2))
    out = torch.zeros_like(y)
    table = attn.relative_position_bias_table
    for bi in range(b):
        for wy in range(0, hp, ws):
            for wx in range(0, wp, ws):
                pos = [(wy + i, wx + j) for i in range(ws) for j in range(ws)]
                tok = torch.stack([y[bi, r, cc] for r, cc in pos])  # (N, C)
                qkv = tok @ attn.qkv.weight.T + attn.qkv.bias
                heads = []
                for hd in range(nh):
                    q = qkv[:, hd * d:(hd + 1) * d] * d**-0.5
                    k = qkv[:, c + hd * d:c + (hd + 1) * d]
                    v = qkv[:, 2 * c + hd * d:2 * c + (hd + 1) * d]
                    logits = q @ k.T
                    for a, (ra, ca) in enumerate(pos):
                        for bb, (rb, cb) in enumerate(pos):
                            idx = (ra - rb + ws - 1) * (2 * ws - 1) + (ca - cb + ws - 1)
                            logits[a, bb] = logits[a, bb] + table[idx, hd]
                            same = ((ra >= hp - s) == (rb >= hp - s)) and (
                                (ca >= wp - s) == (cb >= wp - s))
                            if s > 0 and use_mask and not same:
                                logits[a, bb] = float("-inf")
                    heads.append(logits.softmax(-1) @ v)
                o = torch.cat(heads, -1) @ attn.proj.weight.T + attn.proj.bias
                for n, (r, cc) in enumerate(pos):
                    out[bi, r, cc] = o[n]
    out = torch.roll(out, (s, s), (1, 2))[:, :h, :w].reshape(b, h * w, c)
    x = x + out
    z = F.layer_norm(x, (c,), blk.norm2.weight, blk.norm2.bias)
    return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(z)))


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_matches_slow_reference(shift):
    torch.manual_seed(0)
    h, w = 6, 10  # padded to 8 x 12 -> 2 x 3 windows of 4 x 4
    blk = SwinBlock(dim=8, num_heads=2, window_size=4, shift_size=shift).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_(0, 1.0)  # make the bias matter
        x = torch.randn(2, h * w, 8)
        got = blk(x, (h, w))
        ref = _reference_block(blk, x, h, w)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        if shift:  # the mask is really applied: without it the reference differs
            unmasked = _reference_block(blk, x, h, w, use_mask=False)
            assert (unmasked - got).abs().max() > 1e-3


def test_shifted_window_mask_rule():
    hp, wp, ws, s = 8, 12, 4, 2
    mask = shifted_window_mask(hp, wp, ws, s)
    assert mask.shape == (6, 16, 16)
    for widx in range(6):
        wy, wx = divmod(widx, 3)
        pos = [(wy * ws + i, wx * ws + j) for i in range(ws) for j in range(ws)]
        for a, (ra, ca) in enumerate(pos):
            for b, (rb, cb) in enumerate(pos):
                same = ((ra >= hp - s) == (rb >= hp - s)) and ((ca >= wp - s) == (cb >= wp - s))
                assert mask[widx, a, b].item() == (0.0 if same else -100.0)


# ----------------------------------------------------------------------------- merging
def test_patch_merging_concatenation_order():
    pm = PatchMerging(dim=1)
    seen = {}
    pm.norm.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
    h, w = 3, 5  # odd: padded with zeros to 4 x 6
    grid = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w)  # value = 1 + 5r + c
    out, hw = pm(grid.view(1, h * w, 1), (h, w))
    assert hw == (2, 3) and out.shape == (1, 6, 2)
    cat = seen["x"].view(2, 3, 4)

    def val(r, c):
        return float(grid[0, r, c]) if r < h and c < w else 0.0

    for i in range(2):
        for j in range(3):
            r, c = 2 * i, 2 * j
            # official order: (0,0), (1,0), (0,1), (1,1) as (row, col) offsets
            expect = [val(r, c), val(r + 1, c), val(r, c + 1), val(r + 1, c + 1)]
            assert cat[i, j].tolist() == expect
    assert pm.reduction.weight.shape == (2, 4) and pm.reduction.bias is None
