"""K-Net kernel generation head (official ``ConvKernelHead`` minus its FPN; docs/reference.md §1.3).

From the neck's ``(loc, sem)`` maps (B, C, h, w) at stride 8::

    loc = loc_convs(loc)                         1x1 conv + GN + ReLU
    sem = seg_convs(sem)                         1x1 conv + GN + ReLU
    M0  = init_kernels(loc)                      (B, Np, h, w)    Np learned proposal kernels
    seg = conv_seg(sem)                          (B, T+S, h, w)   sigmoid semantic logits
    F   = sem + loc                              (B, C, h, w)     features of all update stages
    K0  = init_kernels.weight + sum_pixels [sigmoid(M0) > 0.5] * F      (B, Np, C)
          (sigmoid(M0) instead of the 0/1 mask with MODEL.KNET.SOFT_GROUPING)
    stuff kernels = conv_seg.weight[T:]  (B, S, C) (no object feature, bias not part of it),
    stuff masks   = seg[:, T:]           (B, S, h, w)

With ``MODEL.KNET.IMAGE_PROPOSALS = N > 0`` (not official) the last N of the Np thing
proposals come from the image (:mod:`.image_proposals`): their kernels are features at the peaks
of the thing scores of ``seg``, their M0 those kernels applied to ``loc``; ``init_kernels`` then
holds the Np - N learned ones (none when N = Np).

The meta-architecture concatenates the stuff kernels/masks after the stage-0 loss (training) or
right away (inference), see :meth:`KernelGenerationHead.append_stuff`.

State-dict keys are identical to the official ``rpn_head.*`` ones (without the
``localization_fpn`` sub-module, which is :class:`~knet_d2.modeling.neck.LocalizationFPN`):
``init_kernels.weight`` (Np, C, 1, 1), ``conv_seg.{weight (T+S, C, 1, 1), bias}``,
``loc_convs.0.conv.weight`` + ``loc_convs.0.gn.*``, ``seg_convs.0.conv.weight`` +
``seg_convs.0.gn.*``.
"""
import math
from typing import Dict, Optional, Tuple

import torch
from detectron2.config import configurable
from torch import nn

from .image_proposals import ImageProposals
from .neck import ConvNormReLU

__all__ = ["KernelGenerationHead"]


class KernelGenerationHead(nn.Module):
    """Initial kernels K0, masks M0 and semantic logits from the localization FPN outputs.

    Class counts are arguments (no hard-coded 80/53): any ``num_thing_classes >= 1`` and
    ``num_stuff_classes >= 0`` work.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        hidden_dim: int,
        num_proposals: int,
        num_thing_classes: int,
        num_stuff_classes: int,
        num_loc_convs: int = 1,
        num_seg_convs: int = 1,
        norm: str = "GN",
        kernel_init_std: float = 1.0,
        hard_mask_thr: float = 0.5,
        soft_grouping: bool = False,
        seg_prior_prob: float = 0.01,
        image_proposals: int = 0,
    ):
        """
        Args:
            in_channels: channels of the neck outputs.
            hidden_dim: channels C of F and of the kernels (256).
            num_proposals: Np learned thing kernels (100).
            num_thing_classes: T; ``conv_seg`` has T + S outputs, things first.
            num_stuff_classes: S; 0 for instance segmentation (no stuff kernels).
            num_loc_convs / num_seg_convs: 1x1 ConvNormReLU layers on loc / sem (1 each).
            norm: norm of those convs ("GN" = GroupNorm(32)).
            kernel_init_std: std of the normal init of ``init_kernels`` (official 1.0).
            hard_mask_thr: pixels with ``sigmoid(M0) > hard_mask_thr`` form the binary masks
                whose feature sums are added to K0 (official 0.5).
            soft_grouping: weight the feature sums by ``sigmoid(M0)`` instead (a knet_d2 option,
                ``MODEL.KNET.SOFT_GROUPING``; not in the official K-Net).
            seg_prior_prob: ``conv_seg`` bias = ``-log((1 - p) / p)`` (focal-loss prior).
            image_proposals: N of the Np thing proposals taken from the image
                (``MODEL.KNET.IMAGE_PROPOSALS``, :mod:`.image_proposals`); 0 = official.
        """
        super().__init__()
        assert num_thing_classes >= 1 and num_stuff_classes >= 0
        assert (num_loc_convs >= 1 and num_seg_convs >= 1) or in_channels == hidden_dim
        if not 0 <= image_proposals <= num_proposals:
            raise ValueError(
                f"MODEL.KNET.IMAGE_PROPOSALS ({image_proposals}) must be between 0 and "
                f"MODEL.KNET.NUM_PROPOSALS ({num_proposals})"
            )
        self.hidden_dim = hidden_dim
        self.num_proposals = num_proposals
        self.num_thing_classes = num_thing_classes
        self.num_stuff_classes = num_stuff_classes
        self.hard_mask_thr = hard_mask_thr
        self.soft_grouping = soft_grouping
        self.num_learned = num_proposals - image_proposals

        self.loc_convs = nn.ModuleList(
            ConvNormReLU(in_channels if i == 0 else hidden_dim, hidden_dim, 1, norm=norm)
            for i in range(num_loc_convs)
        )
        self.seg_convs = nn.ModuleList(
            ConvNormReLU(in_channels if i == 0 else hidden_dim, hidden_dim, 1, norm=norm)
            for i in range(num_seg_convs)
        )
        self.init_kernels = (
            nn.Conv2d(hidden_dim, self.num_learned, 1, bias=False) if self.num_learned else None
        )
        self.image_proposals = (
            ImageProposals(hidden_dim, image_proposals, num_thing_classes)
            if image_proposals else None
        )
        self.conv_seg = nn.Conv2d(hidden_dim, num_thing_classes + num_stuff_classes, 1)

        # Official init: loc/seg convs normal(0.01); conv_seg normal(0.01) + prior bias;
        # init_kernels normal(0, kernel_init_std).
        for m in list(self.loc_convs.modules()) + list(self.seg_convs.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.0)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.constant_(self.conv_seg.bias, -math.log((1 - seg_prior_prob) / seg_prior_prob))
        if self.init_kernels is not None:
            nn.init.normal_(self.init_kernels.weight, mean=0.0, std=kernel_init_std)

    @classmethod
    def from_config(cls, cfg, in_channels: Optional[int] = None) -> dict:
        k = cfg.MODEL.KNET
        return {
            "in_channels": k.NECK.CONV_DIM if in_channels is None else in_channels,
            "hidden_dim": k.HIDDEN_DIM,
            "num_proposals": k.NUM_PROPOSALS,
            "num_thing_classes": k.NUM_THING_CLASSES,
            "num_stuff_classes": k.NUM_STUFF_CLASSES,
            "norm": k.NECK.NORM,
            "kernel_init_std": k.KERNEL_INIT_STD,
            "hard_mask_thr": k.HARD_MASK_THR,
            "soft_grouping": k.SOFT_GROUPING,
            "image_proposals": k.IMAGE_PROPOSALS,
        }

    def forward(self, loc_feats: torch.Tensor, sem_feats: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            loc_feats: (B, Cin, h, w) localization features from the neck.
            sem_feats: (B, Cin, h, w) semantic features from the neck.

        Returns:
            dict with
              * ``features``: F (B, C, h, w) = sem + loc after their convs;
              * ``mask_logits``: M0 (B, Np, h, w);
              * ``seg_logits``: (B, T+S, h, w);
              * ``kernels``: K0 (B, Np, C);
              * only when S > 0: ``stuff_kernels`` (B, S, C) = ``conv_seg.weight[T:]``
                broadcast, and ``stuff_mask_logits`` (B, S, h, w) = ``seg_logits[:, T:]``.
        """
        for conv in self.loc_convs:
            loc_feats = conv(loc_feats)
        for conv in self.seg_convs:
            sem_feats = conv(sem_feats)
        seg_logits = self.conv_seg(sem_feats)
        features = sem_feats + loc_feats
        b = features.shape[0]
        base = None
        if self.image_proposals is None:
            mask_logits = self.init_kernels(loc_feats)
        else:
            picked, _ = self.image_proposals(loc_feats, seg_logits)
            base = torch.cat([self.learned_kernels(b, picked), picked], dim=1)
            mask_logits = torch.einsum("bnc,bchw->bnhw", base, loc_feats)

        group = mask_logits.sigmoid()
        if not self.soft_grouping:
            group = (group > self.hard_mask_thr).to(features.dtype)
        kernels = self.kernels_from_groups(group, features, base)

        out = {
            "features": features,
            "mask_logits": mask_logits,
            "seg_logits": seg_logits,
            "kernels": kernels,
        }
        if self.num_stuff_classes > 0:
            t = self.num_thing_classes
            stuff = self.conv_seg.weight[t:].view(self.num_stuff_classes, self.hidden_dim)
            out["stuff_kernels"] = stuff.unsqueeze(0).expand(b, -1, -1)
            out["stuff_mask_logits"] = seg_logits[:, t:]
        return out

    def learned_kernels(self, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        """The Np - N learned proposal kernels, (B, Np - N, C) (a view of ``init_kernels``;
        empty with dtype and device of ``like`` when every proposal comes from the image)."""
        if self.init_kernels is None:
            return like.new_zeros((batch_size, 0, self.hidden_dim))
        learned = self.init_kernels.weight.view(self.num_learned, self.hidden_dim)
        return learned.unsqueeze(0).expand(batch_size, -1, -1)

    def kernels_from_groups(
        self,
        groups: torch.Tensor,
        features: torch.Tensor,
        base: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The stage-0 kernels of given grouping masks: ``base + sum_pixels groups * F``.

        Args:
            groups: (B, Np, h, w) grouping weights (0/1 masks, or sigmoids when soft).
            features: F (B, C, h, w).
            base: (B, Np, C) proposal kernels; ``None`` = the learned ones, with zeros in the
                slots of image proposals (the mask-denoising groups have no image peak).

        Returns:
            (B, Np, C).
        """
        grouped = torch.einsum("bnhw,bchw->bnc", groups, features)
        if base is None:
            base = self.learned_kernels(1, grouped)
            if self.image_proposals is not None:
                base = torch.cat([base, base.new_zeros(1, self.image_proposals.num,
                                                       self.hidden_dim)], dim=1)
        return base + grouped

    @staticmethod
    def append_stuff(outputs: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Kernels and masks with the stuff ones appended after the thing proposals.

        Args:
            outputs: the dict returned by :meth:`forward`.

        Returns:
            ``(kernels (B, Np + S, C), mask_logits (B, Np + S, h, w))``; the thing-only tensors
            when the head has no stuff classes.
        """
        kernels, masks = outputs["kernels"], outputs["mask_logits"]
        if "stuff_kernels" in outputs:
            kernels = torch.cat([kernels, outputs["stuff_kernels"]], dim=1)
            masks = torch.cat([masks, outputs["stuff_mask_logits"]], dim=1)
        return kernels, masks

    def extra_repr(self) -> str:
        return (
            f"proposals={self.num_proposals}, things={self.num_thing_classes}, "
            f"stuff={self.num_stuff_classes}, "
            f"image_proposals={self.num_proposals - self.num_learned}"
        )
