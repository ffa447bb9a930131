"""knet_d2.modeling.image_proposals: peak selection and the image proposal kernels
(MODEL.KNET.IMAGE_PROPOSALS), alone and inside KernelGenerationHead."""
import pytest
import torch
import torch.nn.functional as F

from knet_d2.modeling.image_proposals import ImageProposals, select_peaks
from tests.helpers.knet_parts import C, N, make_kernel_head

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def test_select_peaks_orders_peaks_first_then_the_other_pixels():
    # a background falling away from (0, 0), whose 3 x 3 neighbourhood holds the 5.0: no peak
    # in it (equal neighbours would make every pixel of a flat region a peak)
    s = -0.01 * (torch.arange(5)[:, None] + torch.arange(6)[None, :]).float()[None]
    s[0, 1, 1] = 5.0  # peak
    s[0, 1, 2] = 4.5  # beside the first peak: not a peak, although the second highest value
    s[0, 3, 4] = 4.0  # peak
    s[0, 4, 0] = 1.0  # peak (its neighbours are background)
    idx = select_peaks(s, 4)
    assert idx.tolist() == [[1 * 6 + 1, 3 * 6 + 4, 4 * 6 + 0, 1 * 6 + 2]]
    # 5 x 5: (3, 4) has the 4.5 at (1, 2) within 2 pixels and is no peak any more; (4, 0) is
    # 3 rows from (1, 1) and stays one; then the other pixels by score, 4.5 first
    assert select_peaks(s, 3, pool_size=5).tolist() == [[7, 24, 8]]


def test_select_peaks_per_image_and_more_positions_than_pixels():
    s = torch.rand(3, 2, 2)
    idx = select_peaks(s, 9)
    assert idx.shape == (3, 9)
    for b in range(3):  # every pixel appears, the list repeats in the same order
        order = idx[b, :4].tolist()
        assert sorted(order) == [0, 1, 2, 3]
        assert idx[b, 4:8].tolist() == order and idx[b, 8] == order[0]
        assert order[0] == int(s[b].flatten().argmax())


@pytest.mark.parametrize("num,pool", [(0, 3), (2, 2), (2, 0)])
def test_select_peaks_rejects_bad_arguments(num, pool):
    with pytest.raises(ValueError, match="num must be >= 1 and pool_size odd"):
        select_peaks(torch.rand(1, 4, 4), num, pool)


def test_image_proposals_gather_the_features_at_the_thing_peaks():
    props = ImageProposals(C, num=2, num_thing_classes=3)
    loc = torch.rand(2, C, 6, 7, requires_grad=True)
    seg = torch.full((2, 5, 6, 7), -5.0, requires_grad=True)
    with torch.no_grad():
        seg[0, 1, 2, 3] = 3.0  # thing class 1: the best peak of image 0
        seg[0, 0, 5, 6] = 2.0  # thing class 0: its second peak
        seg[0, 4, 0, 0] = 9.0  # a stuff class: never a thing score
        seg[1, 2, 4, 1] = 1.0
        seg[1, 2, 0, 6] = 0.5
    kernels, pos = props(loc, seg)
    assert pos.tolist() == [[2 * 7 + 3, 5 * 7 + 6], [4 * 7 + 1, 0 * 7 + 6]]
    for b in range(2):
        for n in range(2):
            y, x = divmod(int(pos[b, n]), 7)
            torch.testing.assert_close(kernels[b, n], props.proj(loc[b, :, y, x]))
    kernels.sum().backward()
    assert loc.grad.abs().sum() > 0 and seg.grad is None  # positions carry no gradient


def test_kernel_head_with_image_proposals():
    head = make_kernel_head(image_proposals=2)
    assert head.init_kernels.weight.shape == (N - 2, C, 1, 1)
    loc, sem = torch.rand(2, C, 9, 11), torch.rand(2, C, 9, 11)
    out = head(loc, sem)
    loc_c = head.loc_convs[0](loc)
    picked, _ = head.image_proposals(loc_c, out["seg_logits"])
    learned = head.init_kernels.weight[:, :, 0, 0]
    base = torch.cat([learned.expand(2, -1, -1), picked], dim=1)
    m0 = out["mask_logits"]
    assert m0.shape == (2, N, 9, 11) and out["kernels"].shape == (2, N, C)
    torch.testing.assert_close(m0[:, : N - 2], F.conv2d(loc_c, head.init_kernels.weight))
    torch.testing.assert_close(m0, torch.einsum("bnc,bchw->bnhw", base, loc_c))
    group = (m0.sigmoid() > 0.5).float()
    assert 0 < group[:, N - 2:].mean() < 1  # the grouping of the image slots is not trivial
    expected = base + torch.einsum("bnhw,bchw->bnc", group, out["features"])
    torch.testing.assert_close(out["kernels"], expected, rtol=1e-5, atol=1e-4)
    # without a base (mask-denoising groups) the image slots start from zero
    groups = torch.rand(2, N, 9, 11)
    k = head.kernels_from_groups(groups, out["features"])
    grouped = torch.einsum("bnhw,bchw->bnc", groups, out["features"])
    torch.testing.assert_close(k[:, N - 2:], grouped[:, N - 2:])
    torch.testing.assert_close(k[:, : N - 2], grouped[:, : N - 2] + learned)


def test_kernel_head_all_proposals_from_the_image_and_bad_counts():
    head = make_kernel_head(image_proposals=N)
    assert head.init_kernels is None
    assert not any(n.startswith("init_kernels") for n, _ in head.named_parameters())
    out = head(torch.rand(1, C, 8, 8), torch.rand(1, C, 8, 8))
    assert out["kernels"].shape == (1, N, C) and out["mask_logits"].shape == (1, N, 8, 8)
    for bad in (-1, N + 1):
        with pytest.raises(ValueError, match=r"MODEL.KNET.IMAGE_PROPOSALS \(.*NUM_PROPOSALS"):
            make_kernel_head(image_proposals=bad)
