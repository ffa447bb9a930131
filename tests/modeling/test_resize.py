"""knet_d2.modeling.resize: the matrix form of bilinear resizing equals F.interpolate."""
import pytest
import torch
import torch.nn.functional as F

from knet_d2.modeling import resize
from knet_d2.modeling.resize import MATRIX_FORM_MAX_SIDE, bilinear_resize, interpolation_matrix


def _reference(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _value_and_grad(fn, x, size, grad_out):
    x = x.detach().requires_grad_(True)
    y = fn(x, size)
    (gx,) = torch.autograd.grad(y, x, grad_out)
    return y.detach(), gx


@pytest.mark.parametrize(
    "shape, size",
    [
        ((2, 8, 32, 32), (128, 128)),  # x4: a semantic loss's logits to the label size
        ((2, 20, 16, 16), (32, 32)),  # x2: K-Net's mask upsampling
        ((2, 20, 32, 32), (16, 16)),  # /2: masks to the grouping features
        ((1, 3, 17, 23), (40, 9)),  # non-integer ratios, up in h and down in w
        ((1, 2, 1, 1), (6, 6)),  # a PPM 1x1 pool
        ((1, 2, 6, 5), (6, 5)),  # same size: returned as is
    ],
)
def test_float32_values_and_gradients_equal_interpolate(shape, size):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    assert resize._matrices(x, size) is not None or tuple(shape[-2:]) == size
    grad_out = torch.randn(shape[:2] + size)
    y, gx = _value_and_grad(bilinear_resize, x, size, grad_out)
    y_ref, gx_ref = _value_and_grad(_reference, x, size, grad_out)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-4, rtol=1e-5)


def test_bfloat16_within_two_roundings_of_the_exact_resize():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 32, 32).bfloat16()
    assert resize._matrices(x, (128, 128)) is not None
    y = bilinear_resize(x, (128, 128))
    assert y.dtype == torch.bfloat16
    exact = _reference(x.double(), (128, 128))
    error = (y.double() - exact).abs()
    kernel_error = (_reference(x, (128, 128)).double() - exact).abs()
    # PyTorch's kernel rounds once to bfloat16 (half an ulp, 2^-9 relative); the matrix form
    # also rounds its along-w product: at most two half-ulps at the scale of the input
    assert error.max() <= 2.0**-8 * x.double().abs().max()
    assert error.max() <= 2 * kernel_error.max()
    assert error.mean() <= 2 * kernel_error.mean()


def test_bfloat16_with_inexact_weights_falls_back_to_interpolate():
    x = torch.randn(1, 2, 17, 23).bfloat16()
    assert resize._matrices(x, (40, 9)) is None
    assert torch.equal(bilinear_resize(x, (40, 9)), _reference(x, (40, 9)))
    with pytest.raises(ValueError, match="not exact"):
        interpolation_matrix(17, 40, torch.bfloat16)


def test_interpolation_matrix_rows_are_pytorch_weights():
    for n_in, n_out in [(4, 16), (16, 8), (5, 7), (1, 3)]:
        m = interpolation_matrix(n_in, n_out, torch.float64)
        torch.testing.assert_close(m.sum(dim=1), torch.ones(n_out, dtype=torch.float64))
        assert ((m != 0).sum(dim=1) <= 2).all()
        # applied to the unit vectors it reproduces 1-D linear interpolation
        eye = torch.eye(n_in, dtype=torch.float64)[None]
        ref = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0]
        torch.testing.assert_close(m, ref.t())
    with pytest.raises(ValueError, match="positive"):
        interpolation_matrix(0, 4)


def test_large_maps_and_fp16_use_interpolate():
    big = torch.randn(1, 1, MATRIX_FORM_MAX_SIDE + 1, 8)
    assert resize._matrices(big, (10, 10)) is None
    assert torch.equal(bilinear_resize(big, (10, 10)), _reference(big, (10, 10)))
    assert resize._matrices(torch.randn(1, 1, 8, 8).half(), (16, 16)) is None
    assert resize._matrices(torch.randn(1, 1, 8, 8), (16, 16)) is not None


def test_tracing_uses_interpolate_so_traces_follow_the_input_size():
    class Up(torch.nn.Module):
        def forward(self, x):
            h, w = x.shape[-2:]
            return bilinear_resize(x, (h * 2, w * 2))

    traced = torch.jit.trace(Up(), torch.randn(1, 2, 8, 8), check_trace=False)
    assert "upsample_bilinear2d" in str(traced.graph)
    assert "matmul" not in str(traced.graph)
    other = torch.randn(1, 2, 12, 10)
    torch.testing.assert_close(traced(other), _reference(other, (24, 20)))


def test_channels_last_input():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 16, 16).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(bilinear_resize(x, (32, 32)), _reference(x, (32, 32)))


def test_cached_matrices_are_not_changed_by_training():
    before = interpolation_matrix(8, 16).clone()
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    bilinear_resize(x, (16, 16)).sum().backward()
    assert torch.equal(interpolation_matrix(8, 16), before)
    assert not interpolation_matrix(8, 16).requires_grad


def _losses_and_grads(model, batch):
    model.zero_grad()
    losses = model(batch)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def _assert_same_training_step(model, batch, monkeypatch):
    original, taken = resize._matrices, []

    def spy(x, size):
        out = original(x, size)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(resize, "_matrices", spy)
    torch.manual_seed(0)
    losses, grads = _losses_and_grads(model, batch)
    assert any(taken), "the model never took the matrix form"
    with monkeypatch.context() as m:
        m.setattr(resize, "_matrices", lambda x, size: None)  # F.interpolate everywhere
        torch.manual_seed(0)
        ref_losses, ref_grads = _losses_and_grads(model, batch)
    assert losses.keys() == ref_losses.keys() and grads.keys() == ref_grads.keys()
    for k in losses:
        torch.testing.assert_close(losses[k], ref_losses[k], rtol=1e-4, atol=1e-6)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-3, atol=1e-5)


def test_knet_training_step_equals_the_interpolate_one(monkeypatch):
    """Panoptic K-Net (neck, kernel-update heads): same losses and gradients either way."""
    from detectron2.modeling import build_model

    from tests.helpers.tiny_knet import make_input, tiny_cfg

    torch.manual_seed(0)
    model = build_model(tiny_cfg()).train()
    batch = [make_input(64, 64, [0, 3], seed=1), make_input(64, 64, [1], seed=2)]
    _assert_same_training_step(model, batch, monkeypatch)


def test_semantic_knet_training_step_equals_the_interpolate_one(monkeypatch):
    """Semantic K-Net (UPerNet, PPM, logits to the label size): same losses and gradients."""
    from detectron2.modeling import build_model

    from tests.helpers.tiny_semantic import tiny_cfg

    torch.manual_seed(0)
    model = build_model(tiny_cfg("UPerNet")).train()
    g = torch.Generator().manual_seed(0)
    batch = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g),
              "sem_seg": torch.randint(0, 5, (64, 64), generator=g)} for _ in range(2)]
    _assert_same_training_step(model, batch, monkeypatch)
