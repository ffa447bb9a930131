"""Training losses of K-Net for instance and panoptic models (docs/reference.md §2.2, §2.3).

Inputs of :meth:`KNetCriterion.forward` (all predictions at stride 4, the size of the targets):

``rpn`` (stage 0, the kernel-generation head), a dict with
    ``"mask_logits"``: (B, Np, H, W) initial masks of the Np proposal (thing) kernels;
    ``"seg_logits"``: (B, T+S, H, W) semantic logits (S = 0 for instance models).
``stages`` (one dict per kernel-update stage, in order), each with
    ``"mask_logits"``: (B, N, H, W) and ``"cls_logits"``: (B, N, T+S), where N = Np for
    instance models and N = Np + S for panoptic models; there the last S kernels are the
    stuff kernels and kernel Np + j is permanently tied to class T + j.
``targets`` (one dict per image), with
    ``"labels"``: (M,) long thing classes in [0, T);
    ``"masks"``: (M, H, W) float soft thing masks (padded image, bilinearly downsampled);
    panoptic only (optional, treated as empty when absent): ``"stuff_labels"``: (S_b,) long
    stuff classes in [T, T+S) (absolute contiguous ids) and ``"stuff_masks"``: (S_b, H, W).

Returned keys (already weighted; Detectron2 sums every value): ``loss_rpn_mask``,
``loss_rpn_dice``, ``loss_rpn_seg`` (+ ``loss_rpn_rank`` for panoptic, + ``loss_rpn_seg_ce`` with
``seg_ce_weight`` > 0) and per update stage
``i`` (0-based): ``s{i}_loss_cls``, ``s{i}_loss_mask``, ``s{i}_loss_dice``
(+ ``s{i}_loss_rank`` for panoptic).

Matching (official ``KernelIterHead``): the stage-0 losses are matched with the stage-0 masks
and no class cost; update stage ``i`` is matched with the *previous* stage's detached
predictions, i.e. stage 0 of the updates re-uses the stage-0 (rpn) assignment and stage
``i >= 1`` uses the masks and thing-class scores of update stage ``i - 1``. Only the first Np
kernels and the thing columns ``[:T]`` enter matching; stuff kernels are fixed-assigned.

Overlapping targets (soft masks are ``.bool()``-ed, so neighbouring masks overlap along their
borders) are painted in the official order, later writers overwriting earlier ones:
* semantic target of ``loss_rpn_seg``: stuff masks in the given order, then the matched thing
  masks in ascending order of their kernel index;
* rank targets: positive kernels in ascending kernel index, so a pixel covered by several
  positive targets gets the largest covering kernel index (stuff kernels win over things).
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss
from torch import Tensor, nn

from .dense_focal_loss import sigmoid_focal_loss_from_labels
from .matcher import HungarianMatcher
from .target_painting import paint_targets
from .thing_softmax import MARKER, thing_softmax_loss

__all__ = ["KNetCriterion", "dice_loss"]

_DICE_LOSS_EPS = 1e-3
IGNORE_INDEX = 255


def dice_loss(mask_logits: Tensor, targets: Tensor) -> Tensor:
    """K-Net's dice loss, ``1 - 2 sum(p t) / (sum(p^2) + eps + sum(t^2) + eps)`` per mask.

    Args:
        mask_logits: (P, H, W) logits.
        targets: (P, H, W) soft targets.

    Returns:
        (P,) per-mask losses (eps = 1e-3).
    """
    p = mask_logits.flatten(1).sigmoid()
    t = targets.flatten(1)
    num = 2 * (p * t).sum(-1)
    den = (p * p).sum(-1) + _DICE_LOSS_EPS + (t * t).sum(-1) + _DICE_LOSS_EPS
    return 1 - num / den


class _Positives:
    """The positive (kernel, target) pairs of one stage, flattened over the batch.

    Attributes:
        batch_idx, kernel_idx: (P,) long image and kernel index of each positive.
        labels: (P,) long class of each positive.
        masks: (P, H, W) float soft target of each positive.
    """

    def __init__(self, batch_idx: Tensor, kernel_idx: Tensor, labels: Tensor, masks: Tensor):
        self.batch_idx = batch_idx
        self.kernel_idx = kernel_idx
        self.labels = labels
        self.masks = masks

    def __len__(self) -> int:
        return int(self.batch_idx.shape[0])


class KNetCriterion(nn.Module):
    """All K-Net training losses (stage 0 + every kernel-update stage) with official weights."""

    @configurable
    def __init__(
        self,
        *,
        matcher: HungarianMatcher,
        num_thing_classes: int,
        num_stuff_classes: int,
        num_proposals: int,
        class_weight: float = 2.0,
        mask_weight: float = 1.0,
        dice_weight: float = 4.0,
        seg_weight: float = 1.0,
        seg_ce_weight: float = 0.0,
        rank_weight: float = 0.1,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        thing_softmax: bool = False,
        no_object_weight: float = 0.1,
    ):
        """
        Args:
            matcher: the Hungarian matcher (its costs select the positives).
            num_thing_classes: T; thing classes are the contiguous ids [0, T).
            num_stuff_classes: S; 0 for instance models, > 0 makes the model panoptic
                (stuff kernels, stuff targets and the rank losses).
            num_proposals: Np, the number of thing (proposal) kernels.
            class_weight, mask_weight, dice_weight, seg_weight, rank_weight: loss weights.
            seg_ce_weight: weight of ``loss_rpn_seg_ce``, a softmax cross-entropy of the
                stage-0 semantic logits over the pixels that ``loss_rpn_seg``'s target labels
                (not part of the official recipe; 0 = off, no such loss).
            focal_alpha, focal_gamma: parameters of the sigmoid focal losses.
            thing_softmax: the thing kernels' class loss is the softmax cross-entropy of
                :func:`~knet_d2.modeling.thing_softmax.thing_softmax_loss` (its "no object"
                targets weigh ``no_object_weight``) instead of the focal loss (not official).
        """
        super().__init__()
        self.matcher = matcher
        self.num_thing_classes = num_thing_classes
        self.num_stuff_classes = num_stuff_classes
        self.num_proposals = num_proposals
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.seg_weight = seg_weight
        self.seg_ce_weight = seg_ce_weight
        self.rank_weight = rank_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        if thing_softmax and not no_object_weight > 0:  # 0: no loss on a batch without things
            raise ValueError(
                "MODEL.KNET.NO_OBJECT_WEIGHT must be > 0 with THING_SOFTMAX, got "
                f"{no_object_weight}"
            )
        self.thing_softmax = thing_softmax
        self.no_object_weight = no_object_weight
        if thing_softmax:  # travels with the checkpoints (knet_d2.modeling.thing_softmax)
            self.register_buffer(MARKER, torch.ones(()))

    @classmethod
    def from_config(cls, cfg) -> dict:
        k = cfg.MODEL.KNET
        return {
            "matcher": HungarianMatcher(cfg),
            "num_thing_classes": k.NUM_THING_CLASSES,
            "num_stuff_classes": k.NUM_STUFF_CLASSES,
            "num_proposals": k.NUM_PROPOSALS,
            "class_weight": k.CLASS_WEIGHT,
            "mask_weight": k.MASK_WEIGHT,
            "dice_weight": k.DICE_WEIGHT,
            "seg_weight": k.SEG_WEIGHT,
            "seg_ce_weight": k.SEG_CE_WEIGHT,
            "rank_weight": k.RANK_WEIGHT,
            "focal_alpha": k.FOCAL_ALPHA,
            "focal_gamma": k.FOCAL_GAMMA,
            "thing_softmax": k.THING_SOFTMAX,
            "no_object_weight": k.NO_OBJECT_WEIGHT,
        }

    @property
    def panoptic(self) -> bool:
        return self.num_stuff_classes > 0

    @property
    def num_classes(self) -> int:
        return self.num_thing_classes + self.num_stuff_classes

    # ------------------------------------------------------------------ matching
    def match_stages(
        self,
        rpn: Dict[str, Tensor],
        stages: List[Dict[str, Tensor]],
        targets: List[Dict[str, Tensor]],
    ) -> List[List[Tuple[Tensor, Tensor]]]:
        """The assignments used by the losses: element 0 for the stage-0 (rpn) losses and
        element ``i + 1`` for update stage ``i``.

        Update stage 0 re-uses the stage-0 assignment (it is matched with the same stage-0
        masks and no class cost); update stage ``i >= 1`` is matched with the detached masks
        and thing-class logits of the first Np kernels of update stage ``i - 1``. The matcher
        decides how many kernels a target may take in each (one, unless it trains the early
        stages one-to-many: :meth:`HungarianMatcher.copies_per_stage`).
        """
        np_, t = self.num_proposals, self.num_thing_classes
        thing_targets = [{"labels": x["labels"], "masks": x["masks"]} for x in targets]
        predictions = [(rpn["mask_logits"][:, :np_].detach(), None)] + [
            (prev["mask_logits"][:, :np_].detach(), prev["cls_logits"][:, :np_, :t].detach())
            for prev in stages[:-1]
        ]
        # element j of `predictions` assigns update stage j (stage 0 also the stage-0 losses);
        # every prediction set is available now: one host round trip for all of them
        copies = self.matcher.copies_per_stage(len(predictions))
        first, *rest = self.matcher.match_many(predictions, thing_targets, copies)
        return ([first, first] if stages else [first]) + rest

    # ------------------------------------------------------------------ targets
    def _positives(
        self,
        matches: List[Tuple[Tensor, Tensor]],
        targets: List[Dict[str, Tensor]],
        with_stuff: bool,
        like: Tensor,
    ) -> _Positives:
        """Gather the positive pairs of a stage: matched things (+ present stuff kernels)."""
        device = like.device
        h, w = like.shape[-2:]
        b_idx, k_idx, labels, masks = [], [], [], []
        for b, ((pred_i, tgt_i), tgt) in enumerate(zip(matches, targets)):
            b_idx.append(torch.full_like(pred_i, b))
            k_idx.append(pred_i)
            labels.append(tgt["labels"].to(device=device, dtype=torch.long)[tgt_i])
            masks.append(tgt["masks"].to(device=device, dtype=torch.float32)[tgt_i])
            if with_stuff and "stuff_labels" in tgt:
                s_lab = tgt["stuff_labels"].to(device=device, dtype=torch.long)
                b_idx.append(torch.full_like(s_lab, b))
                k_idx.append(s_lab - self.num_thing_classes + self.num_proposals)
                labels.append(s_lab)
                masks.append(tgt["stuff_masks"].to(device=device, dtype=torch.float32))
        return _Positives(
            torch.cat(b_idx),
            torch.cat(k_idx),
            torch.cat(labels),
            torch.cat(masks).reshape(-1, h, w),
        )

    def _rank_loss(self, mask_logits: Tensor, pos: _Positives) -> Tensor:
        """Softmax cross-entropy across kernels per pixel.

        The target is the largest positive kernel index whose ``.bool()`` target covers the
        pixel (the official loop writes positives in ascending kernel order), 255 elsewhere.
        As in mmdet 2.x ``CrossEntropyLoss`` (``reduction='mean'`` on ``reduction='none'``
        values), the sum over non-ignored pixels is divided by all B*H*W pixels.
        """
        b = mask_logits.shape[0]
        rank_target = paint_targets(
            pos.batch_idx,
            pos.kernel_idx,
            pos.masks > 0,
            pos.kernel_idx,
            b,
            mask_logits.shape[1],
            IGNORE_INDEX,
        )
        loss = F.cross_entropy(
            mask_logits.float(), rank_target, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return loss / rank_target.numel()

    def _seg_target(
        self,
        pos: _Positives,
        targets: List[Dict[str, Tensor]],
        batch_size: int,
        like: Tensor,
    ) -> Tensor:
        """(B, H, W) long semantic target of ``loss_rpn_seg``; ``T+S`` = background.

        Stuff masks are painted first (in the given order), then matched thing masks in
        ascending kernel order; later writers overwrite earlier ones.
        """
        device = like.device
        b_idx, prio, covers, values = [], [], [], []
        offset = 0  # stuff writers get priorities [0, offset), things offset + kernel index
        if self.panoptic:
            for b, tgt in enumerate(targets):
                if "stuff_labels" not in tgt:
                    continue
                s_lab = tgt["stuff_labels"].to(device=device, dtype=torch.long)
                b_idx.append(torch.full_like(s_lab, b))
                prio.append(torch.arange(len(s_lab), device=device))
                covers.append(tgt["stuff_masks"].to(device) > 0)
                values.append(s_lab)
                offset = max(offset, len(s_lab))
        b_idx.append(pos.batch_idx)
        prio.append(pos.kernel_idx + offset)
        covers.append(pos.masks > 0)
        values.append(pos.labels)
        return paint_targets(
            torch.cat(b_idx),
            torch.cat(prio),
            torch.cat(covers).reshape(-1, *like.shape[-2:]),
            torch.cat(values),
            batch_size,
            offset + self.num_proposals,
            self.num_classes,
        )

    def _cls_targets(self, pos: _Positives, batch_size: int, num_kernels: int, like: Tensor):
        """One-hot class targets (B, N, K) and per-(kernel, class) label weights (N, K).

        Thing kernels are weighted on the thing columns only (not at all with the softmax
        thing classifier, which has its own loss); stuff kernel ``j`` only on column ``T + j``
        (positive iff stuff class ``T + j`` is present in the image).
        """
        k = self.num_classes
        onehot = like.new_zeros((batch_size, num_kernels, k))
        onehot[pos.batch_idx, pos.kernel_idx, pos.labels] = 1.0
        weights = like.new_zeros((num_kernels, k))
        weights[: self.num_proposals, : self.num_thing_classes] = float(not self.thing_softmax)
        if self.panoptic:
            j = torch.arange(self.num_stuff_classes, device=like.device)
            weights[self.num_proposals + j, self.num_thing_classes + j] = 1.0
        return onehot, weights

    def _mask_losses(self, mask_logits: Tensor, pos: _Positives) -> Tuple[Tensor, Tensor]:
        """BCE (mean over all pixels of the positives) and dice (mean over positives)."""
        if len(pos) == 0:
            zero = mask_logits.sum() * 0.0
            return zero, zero
        pred = mask_logits[pos.batch_idx, pos.kernel_idx].float()
        loss_mask = F.binary_cross_entropy_with_logits(pred, pos.masks, reduction="mean")
        loss_dice = dice_loss(pred, pos.masks).mean()
        return loss_mask, loss_dice

    def _num_pos_avg(self, num_pos: int, device: torch.device) -> Tensor:
        """``reduce_mean(num_pos)`` over all ranks, clamped to >= 1."""
        n = torch.full((), float(num_pos), device=device)  # a fill, no host-to-device copy
        world = comm.get_world_size()
        if world > 1:
            dist.all_reduce(n)
            n = n / world
        return n.clamp(min=1.0)

    # ------------------------------------------------------------------ losses
    def rpn_losses(
        self,
        rpn: Dict[str, Tensor],
        matches: List[Tuple[Tensor, Tensor]],
        targets: List[Dict[str, Tensor]],
    ) -> Dict[str, Tensor]:
        """Stage-0 losses (mask, dice, semantic focal, + rank for panoptic)."""
        mask_logits = rpn["mask_logits"][:, : self.num_proposals]
        seg_logits = rpn["seg_logits"]
        b, _, h, w = mask_logits.shape
        pos = self._positives(matches, targets, with_stuff=False, like=mask_logits)
        losses = {}
        loss_mask, loss_dice = self._mask_losses(mask_logits, pos)
        losses["loss_rpn_mask"] = loss_mask * self.mask_weight
        losses["loss_rpn_dice"] = loss_dice * self.dice_weight
        if self.panoptic:
            if len(pos) == 0:
                losses["loss_rpn_rank"] = mask_logits.sum() * 0.0
            else:
                losses["loss_rpn_rank"] = self._rank_loss(mask_logits, pos) * self.rank_weight

        seg_target = self._seg_target(pos, targets, b, mask_logits).view(b, h * w)
        c = seg_logits.shape[1]
        assert c == self.num_classes, f"seg_logits has {c} channels, expected {self.num_classes}"
        num_fg = (seg_target < c).sum().float().clamp(min=1.0)
        # the focal loss against the one-hot of seg_target (background == c: all zeros)
        focal = sigmoid_focal_loss_from_labels(
            seg_logits.reshape(b, c, h * w),
            seg_target,
            alpha=self.focal_alpha,
            gamma=self.focal_gamma,
        )
        losses["loss_rpn_seg"] = focal / num_fg * self.seg_weight
        if self.seg_ce_weight > 0:
            # background (== c) is ignored: which class, on the pixels that have one
            ce = F.cross_entropy(
                seg_logits.reshape(b, c, h * w).float(), seg_target, ignore_index=c,
                reduction="sum",
            )
            losses["loss_rpn_seg_ce"] = ce / num_fg * self.seg_ce_weight
        return losses

    def stage_losses(
        self,
        stage: Dict[str, Tensor],
        matches: List[Tuple[Tensor, Tensor]],
        targets: List[Dict[str, Tensor]],
        prefix: str = "",
    ) -> Dict[str, Tensor]:
        """Losses of one update stage (cls, mask, dice, + rank for panoptic)."""
        mask_logits, cls_logits = stage["mask_logits"], stage["cls_logits"]
        b, n = mask_logits.shape[:2]
        expected = self.num_proposals + self.num_stuff_classes
        assert n == expected, f"stage has {n} kernels, expected {expected}"
        assert cls_logits.shape[-1] == self.num_classes
        pos = self._positives(matches, targets, with_stuff=self.panoptic, like=mask_logits)

        onehot, weights = self._cls_targets(pos, b, n, cls_logits.float())
        focal = sigmoid_focal_loss(
            cls_logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma
        )
        avg = self._num_pos_avg(len(pos), cls_logits.device)
        losses = {"loss_cls": (focal * weights).sum() / avg * self.class_weight}
        if self.thing_softmax:
            np_, t = self.num_proposals, self.num_thing_classes
            labels = onehot.new_full((b, np_), t, dtype=torch.long)  # t = no object
            is_thing = pos.kernel_idx < np_
            labels[pos.batch_idx[is_thing], pos.kernel_idx[is_thing]] = pos.labels[is_thing]
            ce = thing_softmax_loss(cls_logits[:, :np_, :t], labels, self.no_object_weight)
            losses["loss_cls"] = losses["loss_cls"] + ce * self.class_weight

        loss_mask, loss_dice = self._mask_losses(mask_logits, pos)
        losses["loss_mask"] = loss_mask * self.mask_weight
        losses["loss_dice"] = loss_dice * self.dice_weight
        if self.panoptic:
            if len(pos) == 0:
                losses["loss_rank"] = mask_logits.sum() * 0.0
            else:
                losses["loss_rank"] = self._rank_loss(mask_logits, pos) * self.rank_weight
        return {prefix + k: v for k, v in losses.items()}

    def forward(
        self,
        rpn: Dict[str, Tensor],
        stages: List[Dict[str, Tensor]],
        targets: List[Dict[str, Tensor]],
        matches: Optional[List[List[Tuple[Tensor, Tensor]]]] = None,
    ) -> Dict[str, Tensor]:
        """All weighted losses; see the module docstring for the input structure.

        Args:
            matches: optional pre-computed :meth:`match_stages` output (for inspection).
        """
        if matches is None:
            matches = self.match_stages(rpn, stages, targets)
        losses = self.rpn_losses(rpn, matches[0], targets)
        for i, stage in enumerate(stages):
            losses.update(self.stage_losses(stage, matches[i + 1], targets, prefix=f"s{i}_"))
        return losses
