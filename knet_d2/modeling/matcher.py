"""Hungarian matcher of K-Net (``MaskHungarianAssigner``; docs/reference.md §2.2).

The cost of assigning prediction ``n`` to ground truth ``m`` is

``cost = w_cls * FocalCost + w_mask * MaskCost + w_dice * DiceCost``

with, for ``p`` = sigmoid of the predicted mask logits and ``t`` the soft target mask,

* ``FocalCost[n, m] = [-a (1 - q)^g log(q + e)] - [-(1 - a) q^g log(1 - q + e)]`` where ``q`` is
  the sigmoid class probability of prediction ``n`` at the class of ``m`` (``e = 1e-12``);
  skipped when no class logits are given (the stage-0 masks and update stage 1); with a softmax
  thing classifier (``MODEL.KNET.THING_SOFTMAX``, not official) it is ``-q`` instead, ``q`` the
  softmax probability (:mod:`knet_d2.modeling.thing_softmax`),
* ``MaskCost[n, m] = -(sum(p t) + sum((1 - p)(1 - t))) / (H W)`` (a negative pixel accuracy),
* ``DiceCost[n, m] = -2 sum(p t) / (sum(p^2) + eps + sum(t^2) + eps)`` with ``eps = 1e-3``.

All cost matrices of a batch are computed with batched matrix products on the predictions'
device; the batch is moved to the CPU in one transfer and only
``scipy.optimize.linear_sum_assignment`` runs per image. :meth:`HungarianMatcher.match_many`
does the same for several prediction sets (K-Net's stages) with one transfer for all.

The assignment is one-to-one, as in K-Net. An option not in the official code (off by default)
lets a target take several predictions in the early stages (:func:`one_to_many_assignment`,
``MODEL.KNET.MATCHER.ONE_TO_MANY_*``); in the synthetic 10-minute panoptic recipe it made the
things worse (benchmarks/RESULTS.md).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .thing_softmax import thing_probabilities

__all__ = ["HungarianMatcher", "batched_match_costs", "one_to_many_assignment"]

_FOCAL_COST_EPS = 1e-12
_DICE_COST_EPS = 1e-3


def _pad_targets(
    targets: List[Dict[str, Tensor]], hw: int, device: torch.device
) -> Tuple[Tensor, Tensor, List[int]]:
    """Stack the per-image targets, padded with empty masks to the largest count.

    Returns:
        masks: (B, M_max, H*W) float32 soft masks (zeros in the padding).
        labels: (B, M_max) long class ids (0 in the padding).
        sizes: the B true counts M_b.
    """
    sizes = [int(t["labels"].shape[0]) for t in targets]
    m_max = max(sizes, default=0)
    masks = torch.zeros((len(targets), m_max, hw), dtype=torch.float32, device=device)
    labels = torch.zeros((len(targets), m_max), dtype=torch.long, device=device)
    for b, (t, m) in enumerate(zip(targets, sizes)):
        if m:
            masks[b, :m] = t["masks"].reshape(m, hw).to(device=device, dtype=torch.float32)
            labels[b, :m] = t["labels"].to(device=device)
    return masks, labels, sizes


def batched_match_costs(
    mask_logits: Tensor,
    cls_logits: Optional[Tensor],
    tgt_masks: Tensor,
    tgt_labels: Tensor,
    cost_class: float = 2.0,
    cost_mask: float = 1.0,
    cost_dice: float = 4.0,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    thing_softmax: bool = False,
) -> Tensor:
    """The weighted matching cost for every (prediction, target) pair of a batch.

    Args:
        mask_logits: (B, N, H, W) predicted mask logits.
        cls_logits: (B, N, K) predicted class logits, or None (no class cost).
        tgt_masks: (B, M, H, W) or (B, M, H*W) soft target masks in [0, 1].
        tgt_labels: (B, M) long target classes in [0, K).
        thing_softmax: ``cls_logits`` are the logits of the softmax thing classifier; the class
            cost is ``-q`` (q its probability of the target's class) instead of the focal cost.

    Returns:
        (B, N, M) float32 cost; lower is better.
    """
    b, n = mask_logits.shape[:2]
    hw = mask_logits.shape[-2] * mask_logits.shape[-1]
    p = mask_logits.reshape(b, n, hw).float().sigmoid()
    t = tgt_masks.reshape(b, -1, hw).float()
    m = t.shape[1]
    cost = p.new_zeros((b, n, m))
    if m == 0:
        return cost
    pt = torch.bmm(p, t.transpose(1, 2))  # (B, N, M): sum p t
    sum_p = p.sum(-1)  # (B, N)
    sum_t = t.sum(-1)  # (B, M)
    if cost_mask != 0:
        # sum (1 - p)(1 - t) = HW - sum p - sum t + sum p t
        neg = hw - sum_p[:, :, None] - sum_t[:, None, :] + pt
        cost = cost + cost_mask * (-(pt + neg) / hw)
    if cost_dice != 0:
        denom = (p * p).sum(-1)[:, :, None] + _DICE_COST_EPS + (t * t).sum(-1)[:, None, :]
        cost = cost + cost_dice * (-(2 * pt) / (denom + _DICE_COST_EPS))
    if cls_logits is not None and cost_class != 0:
        idx = tgt_labels[:, None, :].expand(b, n, m)
        if thing_softmax:
            class_cost = -thing_probabilities(cls_logits)  # (B, N, K)
        else:
            q = cls_logits.float().sigmoid()  # (B, N, K)
            pos = -focal_alpha * (1 - q).pow(focal_gamma) * (q + _FOCAL_COST_EPS).log()
            neg = -(1 - focal_alpha) * q.pow(focal_gamma) * (1 - q + _FOCAL_COST_EPS).log()
            class_cost = pos - neg
        cost = cost + cost_class * torch.gather(class_cost, 2, idx)
    return cost


def one_to_many_assignment(cost: np.ndarray, copies: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment in which every target may take up to ``copies`` predictions.

    The targets' columns are repeated ``copies`` times and ``linear_sum_assignment`` solves
    the widened problem: each prediction still gets at most one target, and the matched
    column is mapped back to its target. ``copies=1`` is the plain one-to-one assignment.

    Args:
        cost: (N, M) cost of prediction ``n`` for target ``m``.
        copies: predictions a target may take (>= 1).

    Returns:
        ``(pred_idx, tgt_idx)``, each (min(N, copies * M),) int64, ``pred_idx`` ascending.
    """
    m = cost.shape[1]
    rows, cols = linear_sum_assignment(np.tile(cost, (1, copies)) if copies > 1 else cost)
    return rows.astype(np.int64), (cols % m).astype(np.int64) if m else cols.astype(np.int64)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predicted kernels to ground-truth masks.

    Unmatched predictions are negatives. When an image has more targets than predictions only
    ``N`` targets are matched (the optimal subset); images without targets get empty matches.
    """

    @configurable
    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_mask: float = 1.0,
        cost_dice: float = 4.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        one_to_many_copies: int = 1,
        one_to_many_stages: int = 0,
        num_stages: Optional[int] = None,
        thing_softmax: bool = False,
    ):
        """
        Args:
            cost_class: weight of the focal classification cost.
            cost_mask: weight of the (negative pixel-accuracy) mask cost.
            cost_dice: weight of the dice cost.
            focal_alpha, focal_gamma: parameters of the focal classification cost.
            one_to_many_copies / one_to_many_stages: the assignments of the first
                ``one_to_many_stages`` update stages (update stage 0's is also the stage-0
                losses') let every target take up to ``one_to_many_copies`` predictions
                (:meth:`copies_per_stage`); 1 / 0, the defaults, is K-Net's one-to-one training.
            num_stages: the model's update stages, to check that the last one, which
                inference reads, stays one-to-one (None: not checked).
            thing_softmax: the class logits are those of the softmax thing classifier
                (:func:`batched_match_costs`).
        """
        super().__init__()
        if one_to_many_copies < 1 or one_to_many_stages < 0:
            raise ValueError(
                "MODEL.KNET.MATCHER.ONE_TO_MANY_COPIES must be >= 1 and ONE_TO_MANY_STAGES >= 0, "
                f"got {one_to_many_copies} and {one_to_many_stages}"
            )
        if one_to_many_copies > 1 and num_stages is not None and one_to_many_stages >= num_stages:
            raise ValueError(
                f"MODEL.KNET.MATCHER.ONE_TO_MANY_STAGES ({one_to_many_stages}) must be below "
                f"MODEL.KNET.NUM_STAGES ({num_stages}): the last stage, which inference reads, "
                "has to be trained one-to-one (K-Net's outputs have no NMS)"
            )
        self.one_to_many_copies = one_to_many_copies
        self.one_to_many_stages = one_to_many_stages
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.thing_softmax = thing_softmax

    @classmethod
    def from_config(cls, cfg) -> dict:
        k = cfg.MODEL.KNET
        return {
            "cost_class": k.MATCHER.COST_CLASS,
            "cost_mask": k.MATCHER.COST_MASK,
            "cost_dice": k.MATCHER.COST_DICE,
            "focal_alpha": k.FOCAL_ALPHA,
            "focal_gamma": k.FOCAL_GAMMA,
            "one_to_many_copies": k.MATCHER.ONE_TO_MANY_COPIES,
            "one_to_many_stages": k.MATCHER.ONE_TO_MANY_STAGES,
            "num_stages": k.NUM_STAGES,
            "thing_softmax": k.THING_SOFTMAX,
        }

    def copies_per_stage(self, num_stages: int) -> List[int]:
        """How many predictions a target may take in the assignment of each of ``num_stages``
        update stages, in order (the ``copies`` of :meth:`match_many`)."""
        return [
            self.one_to_many_copies if i < self.one_to_many_stages else 1
            for i in range(num_stages)
        ]

    @torch.no_grad()
    def forward(
        self,
        mask_logits: Tensor,
        cls_logits: Optional[Tensor],
        targets: List[Dict[str, Tensor]],
    ) -> List[Tuple[Tensor, Tensor]]:
        """Match the predictions of every image to its targets.

        Args:
            mask_logits: (B, N, H, W) mask logits (same size as the target masks).
            cls_logits: (B, N, K) class logits, or None to skip the class cost.
            targets: B dicts with ``"labels"`` (M_b,) long in [0, K) and ``"masks"``
                (M_b, H, W) soft float masks.

        Returns:
            B tuples ``(pred_idx, tgt_idx)`` of (min(N, M_b),) long tensors on the device of
            ``mask_logits``; ``pred_idx`` is sorted ascending.
        """
        return self.match_many([(mask_logits, cls_logits)], targets)[0]

    @torch.no_grad()
    def match_many(
        self,
        predictions: Sequence[Tuple[Tensor, Optional[Tensor]]],
        targets: List[Dict[str, Tensor]],
        copies: Optional[Sequence[int]] = None,
    ) -> List[List[Tuple[Tensor, Tensor]]]:
        """:meth:`forward` for several prediction sets against the same targets at once.

        The targets are padded once, every cost matrix is computed on the device, then all of
        them move to the host in one transfer and all indices come back in one transfer (one
        device synchronisation for all sets instead of one per set).

        Args:
            predictions: ``(mask_logits (B, N, H, W), cls_logits (B, N, K) or None)`` pairs,
                all with the same B, N, H, W.
            targets: as in :meth:`forward`.
            copies: per prediction set, how many predictions each target may take (1, the
                default, is K-Net's one-to-one matching). With ``k > 1`` every target enters
                the assignment ``k`` times, so up to ``k`` predictions are matched to it
                (one-to-many; :func:`one_to_many_assignment`).

        Returns:
            per prediction set, the B ``(pred_idx, tgt_idx)`` tuples of :meth:`forward`.
        """
        if not predictions:
            return []
        copies = [1] * len(predictions) if copies is None else list(copies)
        if len(copies) != len(predictions) or min(copies) < 1:
            raise ValueError(f"copies must be one int >= 1 per prediction set, got {copies}")
        first = predictions[0][0]
        assert all(p[0].shape == first.shape for p in predictions), "same (B, N, H, W)"
        assert len(targets) == first.shape[0], "one target dict per image"
        device = first.device
        hw = first.shape[-2] * first.shape[-1]
        tgt_masks, tgt_labels, sizes = _pad_targets(targets, hw, device)
        costs = [
            batched_match_costs(
                mask_logits,
                cls_logits,
                tgt_masks,
                tgt_labels,
                cost_class=self.cost_class,
                cost_mask=self.cost_mask,
                cost_dice=self.cost_dice,
                focal_alpha=self.focal_alpha,
                focal_gamma=self.focal_gamma,
                thing_softmax=self.thing_softmax,
            )
            for mask_logits, cls_logits in predictions
        ]
        cost_cpu = torch.stack(costs).cpu().numpy()  # (P, B, N, M): one host transfer
        rows, cols = [], []
        for cost_set, k in zip(cost_cpu, copies):
            for b, m in enumerate(sizes):
                if m == 0 or cost_set.shape[1] == 0:
                    r = c = np.zeros((0,), dtype=np.int64)
                else:
                    r, c = one_to_many_assignment(cost_set[b, :, :m], k)
                rows.append(r)
                cols.append(c)
        counts = [len(r) for r in rows]
        # one host-to-device transfer for all indices
        flat = torch.from_numpy(np.concatenate(rows + cols)).to(device)
        pred_flat, tgt_flat = flat[: sum(counts)], flat[sum(counts):]
        pairs = list(zip(pred_flat.split(counts), tgt_flat.split(counts)))
        b = len(sizes)
        return [pairs[i * b : (i + 1) * b] for i in range(len(predictions))]

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, focal_alpha={self.focal_alpha}, "
            f"focal_gamma={self.focal_gamma}, thing_softmax={self.thing_softmax}"
        )
