"""knet_d2.modeling.position_encoding: the sine positional encoding, per pixel, with a mask."""
import math

import pytest
import torch

from knet_d2.modeling import SinePositionalEncoding

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def test_sine_pe_matches_per_pixel_formula():
    nf, h, w = 6, 3, 5
    pe = SinePositionalEncoding(nf)(torch.zeros(2, 7, h, w))
    assert pe.shape == (2, 2 * nf, h, w)
    eps, scale = 1e-6, 2 * math.pi
    for ch in range(2 * nf):
        k = ch % nf
        dim_t = 10000.0 ** (2 * (k // 2) / nf)
        fn = math.sin if k % 2 == 0 else math.cos
        for r in range(h):
            for c in range(w):
                # y part first (channels < nf), then x part
                coord = (r + 1) / (h + eps) * scale if ch < nf else (c + 1) / (w + eps) * scale
                expected = fn(coord / dim_t)
                assert pe[0, ch, r, c].item() == pytest.approx(expected, abs=1e-5)
                assert pe[1, ch, r, c].item() == pytest.approx(expected, abs=1e-5)


def test_sine_pe_mask_and_dtype():
    x = torch.zeros(1, 4, 4, 6, dtype=torch.float64)
    pe = SinePositionalEncoding(2)(x)
    assert pe.dtype == torch.float64
    # a padded right half: x coordinates normalised by the valid width (3), not 6
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[..., 3:] = True
    pe_m = SinePositionalEncoding(2)(x, mask)
    xc = 1 / (3 + 1e-6) * 2 * math.pi  # column 0
    assert pe_m[0, 2, 0, 0].item() == pytest.approx(math.sin(xc), abs=1e-6)
