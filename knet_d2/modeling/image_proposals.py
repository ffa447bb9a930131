"""Proposal kernels taken from the image (``MODEL.KNET.IMAGE_PROPOSALS``; not in the official
K-Net, off by default; docs/reference.md §1.3).

The official kernel head starts every image from the same Np learned proposal kernels, and the
matching has to teach each of them where to look. With ``IMAGE_PROPOSALS = N > 0`` the last N
of the Np thing proposals start from the image instead, in the way query-selection detectors
seed their queries from the encoder:

    score  = max over thing classes of the stage-0 semantic logits      (B, h, w), no gradient
    peaks  = pixels equal to the maximum of their 3 x 3 neighbourhood    (local maxima)
    pos    = the N highest-scoring peaks (then the highest other pixels when fewer)  (B, N)
    K_img  = proj(loc[:, :, pos])                                        (B, N, C)

An image proposal's mask is ``M0 = K_img . loc``: the matching and the stage-0 mask losses
teach ``proj`` and the localization features to make it the selected pixel's object. ``proj``
keeps PyTorch's default init: with the identity, the dot products of the non-negative (ReLU)
features would be large and positive everywhere, every image proposal would start as the whole
image and the proposals of an image would be alike. The gather passes gradients to the
localization features; the positions themselves get none (the stage-0 semantic loss trains the
scores). Everything after it is K-Net's own: ``K0`` adds the grouped features to these kernels
as to the learned ones.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ImageProposals", "select_peaks"]


def select_peaks(scores: torch.Tensor, num: int, pool_size: int = 3) -> torch.Tensor:
    """Flat pixel indices of the ``num`` highest local maxima of each score map.

    A peak is a pixel not below any pixel of its ``pool_size`` neighbourhood (so every pixel of
    a flat region is one; real score maps rarely have them, and such peaks rank by their score).

    Args:
        scores: (B, h, w) scores.
        num: positions per image (>= 1).
        pool_size: odd side of the neighbourhood a peak is the maximum of.

    Returns:
        (B, num) long indices into ``h * w``, peaks first by descending score, then the other
        pixels by descending score when an image has fewer than ``num`` peaks; indices repeat
        only when ``num > h * w``.
    """
    if num < 1 or pool_size < 1 or pool_size % 2 == 0:
        raise ValueError(f"select_peaks: num must be >= 1 and pool_size odd, got {num}, "
                         f"{pool_size}")
    b, h, w = scores.shape
    pooled = F.max_pool2d(scores[:, None], pool_size, stride=1, padding=pool_size // 2)[:, 0]
    is_peak = scores >= pooled
    # every peak ranks above every other pixel, each group by its score
    lift = (scores.amax() - scores.amin()).float() + 1.0
    ranked = (scores.float() + is_peak.float() * lift).flatten(1)
    idx = ranked.topk(min(num, h * w), dim=1).indices
    if idx.shape[1] < num:
        idx = idx.repeat(1, -(-num // idx.shape[1]))[:, :num]
    return idx


class ImageProposals(nn.Module):
    """N proposal kernels per image from the localization features at the thing-score peaks."""

    def __init__(self, channels: int, num: int, num_thing_classes: int, pool_size: int = 3):
        """
        Args:
            channels: C of the localization features and of the kernels.
            num: N proposals per image.
            num_thing_classes: T; the first T channels of the semantic logits are the things.
            pool_size: neighbourhood of a peak (:func:`select_peaks`).
        """
        super().__init__()
        self.num = num
        self.num_thing_classes = num_thing_classes
        self.pool_size = pool_size
        self.proj = nn.Linear(channels, channels)

    def forward(
        self, loc_feats: torch.Tensor, seg_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            loc_feats: (B, C, h, w) localization features (after the head's convs).
            seg_logits: (B, T+S, h, w) stage-0 semantic logits.

        Returns:
            ``(kernels (B, N, C), positions (B, N))``: the projected features and their flat
            pixel indices.
        """
        b, c = loc_feats.shape[:2]
        scores = seg_logits[:, : self.num_thing_classes].detach().amax(dim=1)
        pos = select_peaks(scores, self.num, self.pool_size)
        picked = loc_feats.flatten(2).gather(2, pos[:, None, :].expand(b, c, -1))
        return self.proj(picked.transpose(1, 2)), pos

    def extra_repr(self) -> str:
        return f"num={self.num}, things={self.num_thing_classes}, pool={self.pool_size}"
