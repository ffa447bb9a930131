"""Softmax classes for the thing kernels (``MODEL.KNET.THING_SOFTMAX``; docs/reference.md §2.3).

Not in the official K-Net, whose class branch is a sigmoid per class trained with the focal loss
(the default here). With this option the ``T`` thing columns of the first ``Np`` (thing) kernels
are the logits of a softmax over ``T + 1`` classes whose last class, "no object", has a logit
fixed at 0 (a learned one would add nothing: a softmax does not change when every logit moves
by the same amount). They are trained with a cross-entropy against the matched class, or "no
object" for an unmatched kernel, weighted ``no_object_weight`` (MaskFormer's recipe). The stuff
kernels keep their sigmoid focal loss, and the thing kernels' stuff columns are not trained
(as in the official losses).

Everything after training reads ``sigmoid(cls_logits)`` as the class probability, so at
inference the model hands out :func:`as_sigmoid_logits` of its thing logits: the logits whose
sigmoid is the softmax probability. Inference, export and the panoptic merge are unchanged.

A model with this classifier holds one more tensor, ``criterion.`` + :data:`MARKER` (a constant
1), so that its checkpoints say how their class logits are to be read: inference refuses such a
checkpoint in a model without the option and the other way round
(:mod:`knet_d2.engine.weights_report`), since both would misread the scores silently.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MARKER", "as_sigmoid_logits", "thing_probabilities", "thing_softmax_loss"]

#: name of the buffer that marks a model (and its checkpoints) with the softmax thing classifier
MARKER = "thing_softmax_marker"


def _with_no_object(thing_logits: Tensor) -> Tensor:
    """(..., T) -> (..., T + 1) float logits, the last (no object) fixed at 0."""
    x = thing_logits.float()
    return torch.cat([x, x.new_zeros(x.shape[:-1] + (1,))], dim=-1)


def thing_probabilities(thing_logits: Tensor) -> Tensor:
    """(..., T) thing logits -> (..., T) float softmax probabilities (no object left out)."""
    return _with_no_object(thing_logits).softmax(-1)[..., :-1]


def as_sigmoid_logits(thing_logits: Tensor) -> Tensor:
    """(..., T) thing logits -> (..., T) float logits ``z`` with ``sigmoid(z)`` equal to
    :func:`thing_probabilities`: ``z_c = l_c - logsumexp({0} + {l_j : j != c})``."""
    full = _with_no_object(thing_logits)  # (..., T + 1)
    t = thing_logits.shape[-1]
    own = torch.eye(t, t + 1, dtype=torch.bool, device=full.device)  # row c leaves class c out
    others = torch.where(own, float("-inf"), full.unsqueeze(-2))  # (..., T, T + 1)
    return full[..., :-1] - others.logsumexp(-1)


def thing_softmax_loss(thing_logits: Tensor, labels: Tensor, no_object_weight: float) -> Tensor:
    """Weighted cross-entropy of the thing kernels (a scalar).

    Args:
        thing_logits: (B, Np, T) thing logits of the thing kernels.
        labels: (B, Np) long target class in [0, T], T for "no object" (unmatched kernels).
        no_object_weight: weight of the "no object" targets; the others weigh 1.

    Returns:
        ``sum(w_i CE_i) / sum(w_i)`` over all B * Np kernels.
    """
    t = thing_logits.shape[-1]
    weight = thing_logits.new_ones(t + 1, dtype=torch.float32)
    weight[t] = no_object_weight
    return F.cross_entropy(
        _with_no_object(thing_logits).flatten(0, -2), labels.flatten(), weight=weight
    )
