"""Sigmoid focal loss of a dense class map against per-pixel labels, without one-hot targets.

K-Net's stage-0 semantic loss (``loss_rpn_seg``, docs/reference.md §2.2) is the sigmoid focal
loss of a (B, C, N) logit map against the one-hot encoding of a (B, N) label map (label C =
background: no positive class). fvcore's ``sigmoid_focal_loss`` computes it from a float one-hot
tensor of the logits' size and keeps about ten intermediates of that size for autograd; for
COCO panoptic (C = 133, an 800 x 1216 image at stride 4) each is 32 M floats per image.

:func:`sigmoid_focal_loss_from_labels` returns the same sum from the labels. Every element is
first treated as a negative, ``(1 - alpha) p^gamma softplus(x)`` with ``p = sigmoid(x)``; the
at most B*N positive elements are then gathered and their term swapped for the positive one,
``alpha (1 - p)^gamma softplus(-x)``. Its backward (derived by hand, below) recomputes ``p``
from the saved logits, so only the logits and the labels are kept between the passes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sigmoid_focal_loss_from_labels"]


def _negative_terms(x: Tensor, alpha: float, gamma: float) -> Tensor:
    """``(1 - alpha) p^gamma softplus(x)``, the loss of ``x`` with target 0 (same shape)."""
    return (1 - alpha) * torch.sigmoid(x).pow(gamma) * F.softplus(x)


def _positive_terms(x: Tensor, alpha: float, gamma: float) -> Tensor:
    """``alpha (1 - p)^gamma softplus(-x)``, the loss of ``x`` with target 1 (same shape)."""
    return alpha * torch.sigmoid(-x).pow(gamma) * F.softplus(-x)


def _positive_index(labels: Tensor, num_classes: int) -> Tensor:
    """Flat indices into the (B, C, N) logits of the (image, label, pixel) positives.

    Args:
        labels: (B, N) long in [0, C]; C is background (no positive).

    Returns:
        (P,) long indices ``(b * C + labels[b, n]) * N + n`` of the pixels with a label < C.
    """
    b, n = labels.shape
    pixel = torch.arange(n, device=labels.device).expand(b, n)
    image = torch.arange(b, device=labels.device)[:, None].expand(b, n)
    keep = labels < num_classes
    return ((image[keep] * num_classes + labels[keep]) * n + pixel[keep]).reshape(-1)


class _SigmoidFocalLossFromLabels(torch.autograd.Function):
    """Sum of sigmoid focal losses; see :func:`sigmoid_focal_loss_from_labels`."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
        x = logits.reshape(-1)
        index = _positive_index(labels, logits.shape[1])
        # every element as a negative, in place: p^gamma . softplus(x), summed by one dot
        p_pow = _pow_(torch.sigmoid(x), gamma)
        total = torch.dot(p_pow, F.softplus(x)) * (1 - alpha)
        del p_pow
        xp = x[index]
        swap = _positive_terms(xp, alpha, gamma) - _negative_terms(xp, alpha, gamma)
        ctx.save_for_backward(logits, index)
        ctx.alpha, ctx.gamma = alpha, gamma
        return total + swap.sum()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        logits, index = ctx.saved_tensors
        alpha, gamma = ctx.alpha, ctx.gamma
        # d/dx (1-a) p^g softplus(x)  =  (1-a) p^g (g (1-p) softplus(x) + p)
        # d/dx a (1-p)^g softplus(-x) = -a (1-p)^g (g p softplus(-x) + 1 - p)
        p = torch.sigmoid(logits)
        grad = F.softplus(logits).mul_(1 - p).mul_(gamma).add_(p)
        grad.mul_(_pow_(p, gamma)).mul_((1 - alpha) * grad_out)
        del p
        xp = logits.reshape(-1)[index]
        pp = torch.sigmoid(xp)
        qp = 1 - pp
        positive = -alpha * qp.pow(gamma) * (gamma * pp * F.softplus(-xp) + qp)
        grad.view(-1)[index] = positive * grad_out
        return grad, None, None, None


def _pow_(t: Tensor, gamma: float) -> Tensor:
    """``t ** gamma`` in place (a multiplication for the usual gamma = 2)."""
    return t.mul_(t) if gamma == 2 else t.pow_(gamma)


def sigmoid_focal_loss_from_labels(
    logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sum over all elements of fvcore's ``sigmoid_focal_loss(logits, one_hot(labels))``.

    Args:
        logits: (B, C, N) float logits (computed in float32; other dtypes are converted).
        labels: (B, N) long in [0, C]; ``C`` marks a pixel with no positive class (its one-hot
            row is all zeros).
        alpha: weight of the positives (``1 - alpha`` for the negatives), in [0, 1].
        gamma: focusing exponent, >= 0.

    Returns:
        A 0-dim float32 tensor, differentiable with respect to ``logits``.
    """
    if logits.dim() != 3 or labels.shape != (logits.shape[0], logits.shape[2]):
        raise ValueError(
            f"expected logits (B, C, N) and labels (B, N), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    return _SigmoidFocalLossFromLabels.apply(
        logits.float().contiguous(), labels.long(), float(alpha), float(gamma)
    )
