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
        """
        super().__init__()
        assert num_thing_classes >= 1 and num_stuff_classes >= 0
        assert (num_loc_convs >= 1 and num_seg_convs >= 1) or in_channels == hidden_dim
        self.hidden_dim = hidden_dim
        self.num_proposals = num_proposals
        self.num_thing_classes = num_thing_classes
        self.num_stuff_classes = num_stuff_classes
        self.hard_mask_thr = hard_mask_thr
        self.soft_grouping = soft_grouping

        self.loc_convs = nn.ModuleList(
            ConvNormReLU(in_channels if i == 0 else hidden_dim, hidden_dim, 1, norm=norm)
            for i in range(num_loc_convs)
        )
        self.seg_convs = nn.ModuleList(
            ConvNormReLU(in_channels if i == 0 else hidden_dim, hidden_dim, 1, norm=norm)
            for i in range(num_seg_convs)
        )
        self.init_kernels = nn.Conv2d(hidden_dim, num_proposals, 1, bias=False)
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
        mask_logits = self.init_kernels(loc_feats)
        seg_logits = self.conv_seg(sem_feats)
        features = sem_feats + loc_feats

        b = features.shape[0]
        group = mask_logits.sigmoid()
        if not self.soft_grouping:
            group = (group > self.hard_mask_thr).to(features.dtype)
        kernels = self.kernels_from_groups(group, features)

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

    def kernels_from_groups(self, groups: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The stage-0 kernels of given grouping masks: ``init_kernels.weight + sum_pixels
        groups * F``.

        Args:
            groups: (B, Np, h, w) grouping weights (0/1 masks, or sigmoids when soft).
            features: F (B, C, h, w).

        Returns:
            (B, Np, C).
        """
        learned = self.init_kernels.weight.view(self.num_proposals, self.hidden_dim)
        return learned.unsqueeze(0) + torch.einsum("bnhw,bchw->bnc", groups, features)

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
            f"stuff={self.num_stuff_classes}"
        )
