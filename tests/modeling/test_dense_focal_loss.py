"""The label-map sigmoid focal loss equals fvcore's one-hot version, value and gradient."""
import pytest
import torch
from fvcore.nn import sigmoid_focal_loss

from knet_d2.modeling.dense_focal_loss import sigmoid_focal_loss_from_labels


def _reference(logits, labels, alpha, gamma):
    """fvcore's loss on the one-hot of ``labels`` (label C -> an all-zero row)."""
    c = logits.shape[1]
    onehot = (labels[:, None, :] == torch.arange(c)[None, :, None]).to(logits.dtype)
    return sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="sum")


def _case(seed, b=2, c=7, n=50, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, n, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, c + 1, (b, n), generator=g)  # c = background
    return logits, labels


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.5), (0.75, 0.0), (0.25, 3.0)])
def test_value_and_gradient_equal_fvcore(alpha, gamma):
    logits, labels = _case(0)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss_from_labels(ours_in.double(), labels, alpha, gamma)
    ref = _reference(ref_in, labels, alpha, gamma)
    ours.backward(torch.tensor(1.7))
    (ref * 1.7).backward()
    assert torch.allclose(ours.double(), ref.float().double(), rtol=1e-5)
    assert torch.allclose(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-6)
    # the positives and the negatives both contribute to the gradient
    pos = labels[:, None, :] == torch.arange(logits.shape[1])[None, :, None]
    assert ours_in.grad[pos].abs().sum() > 0 and ours_in.grad[~pos].abs().sum() > 0


def test_all_background_and_all_positive_images():
    logits, _ = _case(1, b=2, c=4, n=30)
    labels = torch.stack([torch.full((30,), 4), torch.arange(30) % 4])  # image 0: no positive
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    sigmoid_focal_loss_from_labels(ours_in, labels).backward()
    _reference(ref_in, labels, 0.25, 2.0).backward()
    assert torch.allclose(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-6)


def test_extreme_logits_stay_finite_and_match():
    logits, labels = _case(2, scale=40.0)
    ours_in = logits.float().clone().requires_grad_()
    ref_in = logits.float().clone().requires_grad_()
    ours = sigmoid_focal_loss_from_labels(ours_in, labels)
    ref = _reference(ref_in, labels, 0.25, 2.0)
    ours.backward()
    ref.backward()
    assert torch.isfinite(ours) and torch.isfinite(ours_in.grad).all()
    assert torch.allclose(ours, ref, rtol=1e-4)
    assert torch.allclose(ours_in.grad, ref_in.grad, rtol=1e-3, atol=1e-5)


def test_computes_in_float32_and_checks_shapes():
    logits, labels = _case(3)
    out = sigmoid_focal_loss_from_labels(logits.to(torch.bfloat16).requires_grad_(), labels)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"labels \(B, N\)"):
        sigmoid_focal_loss_from_labels(logits, labels[:, :-1])
