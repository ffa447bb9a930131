"""Mask-denoising training groups for the kernel-update stages (training only, off by default).

Not in the official K-Net (docs/reference.md §2.2). Next to the normal kernels, every training
image gets a *denoising group*: its thing kernels start from the image's ground-truth thing
masks, each randomly shifted and rescaled, instead of from the stage-0 proposals. The group runs
through the same update stages (as extra batch entries, so it never attends to the normal
kernels) and is trained with a fixed assignment, kernel ``j`` to ground-truth thing ``j``. The
update stages thus learn to classify and refine a mask that roughly covers a thing from the
first iteration on, instead of only once the stage-0 masks find the things. Inference, the
normal kernels' matching and the state dict are unchanged. In the synthetic 10-minute recipes
on a 2-core CPU the groups cost 10-29% of the iterations and did not pay for them (PQ_th 9.0
against 13.4, mask AP 14.9 against 13.4; benchmarks/RESULTS.md), so no config enables them.

A group has the layout of the normal kernels (B, N, ...) with N = Np (+ S stuff kernels):

* thing slot ``j < min(M_b, Np)``: initial mask = jittered ground-truth mask ``j`` as logits
  (+-``MASK_LOGIT``, so the stage's hard grouping mask is exactly the jittered mask) and
  initial kernel ``w_j + sum_pixels(mask * F)``, the stage-0 formula of
  :class:`~knet_d2.modeling.kernel_head.KernelGenerationHead` with the jittered mask;
* thing slot ``j >= M_b``: an empty mask and the learned kernel ``w_j`` (a negative);
* stuff slots: the normal stuff kernels and masks.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import Tensor

from .kernel_head import KernelGenerationHead

__all__ = ["MaskDenoising", "jitter_masks"]

#: |logit| of the denoising groups' initial masks (sigmoid(8) = 0.9997).
MASK_LOGIT = 8.0


def jitter_masks(masks: Tensor, shift: float, scale: float) -> Tensor:
    """Randomly shift and rescale every mask about its centroid (one affine warp per mask).

    Mask ``m`` is scaled by ``s ~ U(1 - scale, 1 + scale)`` about its centroid and shifted by
    ``U(-shift, shift)`` times its extent (the side of a square of its area) in each axis.

    Args:
        masks: (M, h, w) float masks in [0, 1].
        shift: largest shift as a fraction of the mask's extent (>= 0).
        scale: largest relative change of size (in [0, 1)).

    Returns:
        (M, h, w) bool jittered masks (pixels whose warped value is > 0.5).
    """
    m, h, w = masks.shape
    if m == 0:
        return masks.new_zeros((0, h, w), dtype=torch.bool)
    masks = masks.float()
    device = masks.device
    # pixel centres in affine_grid's normalised coordinates (align_corners=False)
    ys = (torch.arange(h, device=device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) * 2 + 1) / w - 1
    area = masks.sum(dim=(1, 2)).clamp(min=1.0)
    cy = (masks.sum(dim=2) * ys).sum(dim=1) / area
    cx = (masks.sum(dim=1) * xs).sum(dim=1) / area
    extent = area.sqrt()
    s = 1.0 + scale * (2 * torch.rand(m, device=device) - 1)
    ty = shift * (2 * torch.rand(m, device=device) - 1) * extent * 2 / h
    tx = shift * (2 * torch.rand(m, device=device) - 1) * extent * 2 / w
    # output point p samples the input at c + (p - c - t) / s
    theta = masks.new_zeros((m, 2, 3))
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    theta[:, 0, 2] = cx - (cx + tx) / s
    theta[:, 1, 2] = cy - (cy + ty) / s
    grid = F.affine_grid(theta, [m, 1, h, w], align_corners=False)
    warped = F.grid_sample(masks[:, None], grid, mode="bilinear", align_corners=False)
    return warped[:, 0] > 0.5


class MaskDenoising:
    """Builds the denoising groups and their losses (no parameters of its own)."""

    @configurable
    def __init__(self, *, shift: float, scale: float, loss_weight: float):
        """
        Args:
            shift / scale: jitter of the ground-truth masks (:func:`jitter_masks`).
            loss_weight: factor on every denoising loss.
        """
        if shift < 0 or not 0 <= scale < 1 or loss_weight <= 0:
            raise ValueError(
                "MODEL.KNET.DENOISING needs SHIFT >= 0, 0 <= SCALE < 1 and LOSS_WEIGHT > 0, got "
                f"SHIFT {shift}, SCALE {scale}, LOSS_WEIGHT {loss_weight}"
            )
        self.shift = shift
        self.scale = scale
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg) -> dict:
        d = cfg.MODEL.KNET.DENOISING
        return {"shift": d.SHIFT, "scale": d.SCALE, "loss_weight": d.LOSS_WEIGHT}

    @staticmethod
    def num_slots(targets: List[Dict[str, Tensor]], num_proposals: int) -> List[int]:
        """Per image the number of ground-truth things that get a slot: ``min(M_b, Np)``."""
        return [min(int(t["labels"].shape[0]), num_proposals) for t in targets]

    def queries(
        self,
        targets: List[Dict[str, Tensor]],
        features: Tensor,
        kernel_head: KernelGenerationHead,
    ) -> Tuple[Tensor, Tensor]:
        """Initial thing kernels and masks of the denoising groups.

        Args:
            targets: per image ``labels`` (M_b,) and ``masks`` (M_b, H, W) (stride 4).
            features: F (B, C, h, w) of the kernel head.
            kernel_head: its :meth:`~KernelGenerationHead.kernels_from_groups` makes the kernels.

        Returns:
            ``(kernels (B, Np, C), mask_logits (B, Np, h, w))``.
        """
        b, _, h, w = features.shape
        np_ = kernel_head.num_proposals
        slots = self.num_slots(targets, np_)
        gt = [t["masks"][:n] for t, n in zip(targets, slots)]
        masks = features.new_zeros((b, np_, h, w), dtype=torch.bool)
        if sum(slots) > 0:
            flat = torch.cat(gt).float()
            if flat.shape[-2:] != (h, w):
                flat = F.interpolate(flat[:, None], size=(h, w), mode="bilinear",
                                     align_corners=False)[:, 0]
            jittered = jitter_masks(flat, self.shift, self.scale)
            b_idx = torch.repeat_interleave(torch.arange(b, device=features.device),
                                            torch.tensor(slots, device=features.device))
            k_idx = torch.cat([torch.arange(n, device=features.device) for n in slots])
            masks[b_idx, k_idx] = jittered
        hard = masks.to(features.dtype)
        return kernel_head.kernels_from_groups(hard, features), (hard * 2 - 1) * MASK_LOGIT

    def losses(
        self,
        criterion,
        stages: List[Dict[str, Tensor]],
        targets: List[Dict[str, Tensor]],
    ) -> Dict[str, Tensor]:
        """The denoising groups' losses, ``dn_s{i}_*`` per update stage ``i``.

        Each stage's losses are ``criterion.stage_losses`` with the fixed assignment kernel
        ``j`` <-> thing ``j`` (``j < min(M_b, Np)``), times ``loss_weight``.

        Args:
            criterion: the model's :class:`~knet_d2.modeling.criterion.KNetCriterion`.
            stages: per update stage the group's ``mask_logits`` (B, N, H, W) and
                ``cls_logits`` (B, N, T+S), float32.
            targets: as for the criterion.
        """
        slots = self.num_slots(targets, criterion.num_proposals)
        device = stages[0]["mask_logits"].device if stages else None
        matches = [
            (torch.arange(n, device=device), torch.arange(n, device=device)) for n in slots
        ]
        out = {}
        for i, stage in enumerate(stages):
            for k, v in criterion.stage_losses(stage, matches, targets, f"dn_s{i}_").items():
                out[k] = v * self.loss_weight
        return out
