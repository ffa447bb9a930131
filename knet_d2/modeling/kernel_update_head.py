"""One K-Net kernel update stage (official ``KernelUpdateHead``; docs/reference.md §1.4, §1.5).

Inputs: F (B, C, h, w) from the kernel head (the same F for every stage), kernels K (B, N, C)
and mask logits M (B, N, h', w') of the previous stage::

    Fi  = feat_transform(F)                                 1x1 conv with bias, no norm/act
    G   = act(resize(M, (h, w)))                            hard: [sigmoid > thr]; soft: softmax_N
    F^K = einsum('bnhw,bchw->bnc', G, Fi)                   un-normalised group features
    K'  = kernel_update_conv(F^K, K)                        KernelUpdator
    K'  = attention_norm(K' + MHA(K', K', K'))              sequence = the N kernels of an image
    Ki  = ffn_norm(K' + FFN(K'))                            -> next stage
    cls = fc_cls(cls_fcs(Ki))                               (B, N, num_classes), if num_classes > 0
    Mi  = einsum('bnc,bchw->bnhw', fc_mask(mask_fcs(Ki)), Fi)     per-image 1x1 dynamic conv

``cls_fcs`` / ``mask_fcs`` = [Linear (no bias), LayerNorm, ReLU] x num_{cls,mask}_fcs.
Masks stay at F's resolution; :func:`upsample_masks` brings them to stride 4 for losses and
outputs (the meta-architecture calls it; the next stage groups with the un-upsampled ones).

State-dict keys vs the official ``roi_head.mask_head.{s}.*`` (mmcv 1.x) / mmseg
``decode_head.kernel_update_head.{s}.*``:

==========================================  ===========================================
here                                        official
==========================================  ===========================================
``attention.in_proj_weight`` (3C, C) ...    ``attention.attn.in_proj_weight`` ...
``attention.out_proj.{weight,bias}``        ``attention.attn.out_proj.{weight,bias}``
``feat_transform.{weight,bias}``            ``feat_transform.conv.{weight,bias}``
``ffn.layers.0.0.*`` (Linear C->Cff)        same (mmcv FFN: ``layers.{i}.0`` hidden Linear)
``ffn.layers.1.*`` (Linear Cff->C)          same (last Linear, ``num_ffn_fcs - 1``)
``attention_norm``, ``ffn_norm``,           same
``kernel_update_conv.*``, ``cls_fcs.{0,1}``,
``fc_cls``, ``mask_fcs.{0,1}``, ``fc_mask``
==========================================  ===========================================
"""
import math
from typing import Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn

from .kernel_updator import KernelUpdator
from .resize import bilinear_resize

__all__ = [
    "KERNEL_UPDATE_HEAD_REGISTRY",
    "build_kernel_update_head",
    "FFN",
    "KernelUpdateHead",
    "upsample_masks",
]

KERNEL_UPDATE_HEAD_REGISTRY = Registry("KERNEL_UPDATE_HEAD")
KERNEL_UPDATE_HEAD_REGISTRY.__doc__ = """
Registry for K-Net kernel update stages: ``forward(features, kernels, mask_logits) ->
(kernels, mask_logits, cls_logits or None)``.
"""


def upsample_masks(mask_logits: torch.Tensor, scale: int) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling of mask logits by an integer factor.

    Args:
        mask_logits: (B, N, h, w).
        scale: factor (2 in K-Net: stride 8 -> 4); 1 returns the input unchanged.

    Returns:
        (B, N, h * scale, w * scale).
    """
    if scale == 1:
        return mask_logits
    h, w = mask_logits.shape[-2:]
    return bilinear_resize(mask_logits, (h * scale, w * scale))


class FFN(nn.Module):
    """mmcv-``FFN``-compatible layout *without* the residual (the head adds it).

    ``layers = [Sequential(Linear(C, Cff), ReLU, Dropout)] + [Sequential(Linear(Cff, Cff), ReLU,
    Dropout)] * (num_fcs - 2) + [Linear(Cff, C), Dropout]`` so the parameter keys equal mmcv's
    (``layers.0.0``, ..., ``layers.{num_fcs-1}``).
    """

    def __init__(self, embed_dims: int, feedforward_channels: int, num_fcs: int = 2,
                 dropout: float = 0.0):
        """
        Args:
            embed_dims: C.
            feedforward_channels: Cff hidden width.
            num_fcs: number of Linear layers (>= 2).
            dropout: dropout after every hidden activation and after the last Linear.
        """
        super().__init__()
        assert num_fcs >= 2, f"num_fcs must be >= 2, got {num_fcs}"
        layers = []
        in_ch = embed_dims
        for _ in range(num_fcs - 1):
            layers.append(
                nn.Sequential(
                    nn.Linear(in_ch, feedforward_channels), nn.ReLU(inplace=True),
                    nn.Dropout(dropout),
                )
            )
            in_ch = feedforward_channels
        layers.append(nn.Linear(feedforward_channels, embed_dims))
        layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C), no residual."""
        return self.layers(x)


def _fcs(channels: int, num: int) -> nn.Sequential:
    """[Linear(no bias), LayerNorm, ReLU] x num, flat so keys are ``{3i}.weight``, ``{3i+1}.*``."""
    mods = []
    for _ in range(num):
        mods += [nn.Linear(channels, channels, bias=False), nn.LayerNorm(channels),
                 nn.ReLU(inplace=True)]
    return nn.Sequential(*mods)


@KERNEL_UPDATE_HEAD_REGISTRY.register()
class KernelUpdateHead(nn.Module):
    """One kernel update stage, detection (hard masks, class branch) or semantic variant.

    Detection (instance / panoptic): ``mask_act="hard_sigmoid"``, ``num_classes = T + S``,
    ``xavier_init=True``. Semantic (official seg heads): ``mask_act="softmax"``,
    ``num_classes=0`` (no class branch), ``xavier_init=False`` (PyTorch default init,
    docs/reference.md §1.5) and, for the FCN/PSP/ASPP configs, ``in_channels=512,
    updator_channels=256``.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int = 256,
        num_classes: int = 80,
        num_heads: int = 8,
        feedforward_channels: int = 2048,
        num_ffn_fcs: int = 2,
        num_cls_fcs: int = 1,
        num_mask_fcs: int = 1,
        dropout: float = 0.0,
        updator_channels: Optional[int] = None,
        mask_act: str = "hard_sigmoid",
        hard_mask_thr: float = 0.5,
        xavier_init: bool = True,
        cls_prior_prob: float = 0.01,
    ):
        """
        Args:
            in_channels: C, channels of F and of the kernels (256; 512 for semantic FCN/PSP/ASPP).
            num_classes: sigmoid classes of ``fc_cls`` (T + S); 0 = no class branch.
            num_heads: heads of the kernel self-attention.
            feedforward_channels: FFN hidden width.
            num_ffn_fcs: Linear layers of the FFN (>= 2).
            num_cls_fcs / num_mask_fcs: [Linear, LN, ReLU] blocks before ``fc_cls`` / ``fc_mask``.
            dropout: attention-weight dropout and FFN dropout.
            updator_channels: ``in_channels`` of the :class:`KernelUpdator` (default C);
                must divide C (C / updator_channels > 1 = split-halves quirk).
            mask_act: "hard_sigmoid" (group masks ``(sigmoid(M) > hard_mask_thr).float()``),
                "sigmoid" (``sigmoid(M)``, a knet_d2 option: ``MODEL.KNET.SOFT_GROUPING``) or
                "softmax" (``softmax(M, dim=1)`` over the kernels/classes).
            hard_mask_thr: threshold of the hard masks.
            xavier_init: call :meth:`init_weights` (the detection heads' init); False keeps the
                PyTorch default init (semantic heads).
            cls_prior_prob: ``fc_cls.bias = -log((1 - p) / p)`` in :meth:`init_weights`.
        """
        super().__init__()
        assert mask_act in ("hard_sigmoid", "sigmoid", "softmax"), mask_act
        updator_channels = in_channels if updator_channels is None else updator_channels
        assert in_channels % updator_channels == 0, (in_channels, updator_channels)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.mask_act = mask_act
        self.hard_mask_thr = hard_mask_thr
        self.cls_prior_prob = cls_prior_prob

        self.feat_transform = nn.Conv2d(in_channels, in_channels, 1)
        self.kernel_update_conv = KernelUpdator(updator_channels)
        self.attention = nn.MultiheadAttention(
            in_channels, num_heads, dropout=dropout, batch_first=True
        )
        self.attention_norm = nn.LayerNorm(in_channels)
        self.ffn = FFN(in_channels, feedforward_channels, num_ffn_fcs, dropout)
        self.ffn_norm = nn.LayerNorm(in_channels)
        if num_classes > 0:
            self.cls_fcs: Optional[nn.Sequential] = _fcs(in_channels, num_cls_fcs)
            self.fc_cls: Optional[nn.Linear] = nn.Linear(in_channels, num_classes)
        else:
            self.cls_fcs = None
            self.fc_cls = None
        self.mask_fcs = _fcs(in_channels, num_mask_fcs)
        self.fc_mask = nn.Linear(in_channels, in_channels)
        if xavier_init:
            self.init_weights()

    def init_weights(self) -> None:
        """Detection init: xavier_uniform on every parameter with dim > 1 (1-D parameters keep
        their PyTorch defaults) and ``fc_cls.bias = -log((1 - p) / p)`` (-4.595 for p=0.01)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if self.fc_cls is not None:
            prior = self.cls_prior_prob
            nn.init.constant_(self.fc_cls.bias, -math.log((1 - prior) / prior))

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Detection variant from ``MODEL.KNET.*``."""
        k = cfg.MODEL.KNET
        return {
            "in_channels": k.HIDDEN_DIM,
            "num_classes": k.NUM_THING_CLASSES + k.NUM_STUFF_CLASSES,
            "num_heads": k.NUM_HEADS,
            "feedforward_channels": k.FFN_DIM,
            "num_ffn_fcs": k.NUM_FFN_FCS,
            "num_cls_fcs": k.NUM_CLS_FCS,
            "num_mask_fcs": k.NUM_MASK_FCS,
            "dropout": k.DROPOUT,
            "updator_channels": k.HIDDEN_DIM,
            "mask_act": "sigmoid" if k.SOFT_GROUPING else "hard_sigmoid",
            "hard_mask_thr": k.HARD_MASK_THR,
            "xavier_init": True,
        }

    # ---------------------------------------------------------------- steps
    def group_masks(self, mask_logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """(B, N, h', w') logits -> (B, N, h, w) grouping weights (hard 0/1, sigmoid or softmax
        over N).

        The logits are first resized bilinearly (align_corners=False) to ``size`` if needed.
        """
        mask_logits = bilinear_resize(mask_logits, size)
        if self.mask_act == "softmax":
            return mask_logits.softmax(dim=1)
        if self.mask_act == "sigmoid":
            return mask_logits.sigmoid()
        return (mask_logits.sigmoid() > self.hard_mask_thr).to(mask_logits.dtype)

    def assemble(self, feats: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """Group feature assembling F^K = sum_pixels G * Fi.

        Args:
            feats: Fi (B, C, h, w) (already feat-transformed).
            mask_logits: (B, N, h', w').

        Returns:
            (B, N, C).
        """
        masks = self.group_masks(mask_logits, tuple(feats.shape[-2:])).to(feats.dtype)
        return torch.einsum("bnhw,bchw->bnc", masks, feats)

    def interact(self, kernels: torch.Tensor) -> torch.Tensor:
        """Kernel interaction: post-norm self-attention then post-norm FFN, (B, N, C) -> same."""
        attn = self.attention(kernels, kernels, kernels, need_weights=False)[0]
        kernels = self.attention_norm(kernels + attn)
        return self.ffn_norm(kernels + self.ffn(kernels))

    def forward(
        self, features: torch.Tensor, kernels: torch.Tensor, mask_logits: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """
        Args:
            features: F (B, C, h, w), shared by all stages.
            kernels: K_{i-1} (B, N, C).
            mask_logits: M_{i-1} (B, N, h', w'); resized to (h, w) for grouping if different.

        Returns:
            ``(kernels (B, N, C), mask_logits (B, N, h, w), cls_logits (B, N, num_classes) or
            None)``; ``mask_logits`` are at F's resolution (see :func:`upsample_masks`).
        """
        feats = self.feat_transform(features)
        group_feats = self.assemble(feats, mask_logits)
        kernels = self.kernel_update_conv(group_feats, kernels)
        kernels = self.interact(kernels)

        cls_logits = None
        if self.fc_cls is not None:
            cls_logits = self.fc_cls(self.cls_fcs(kernels))
        mask_kernels = self.fc_mask(self.mask_fcs(kernels))
        new_masks = torch.einsum("bnc,bchw->bnhw", mask_kernels, feats)
        return kernels, new_masks, cls_logits

    def extra_repr(self) -> str:
        return f"mask_act={self.mask_act}, num_classes={self.num_classes}"


def build_kernel_update_head(cfg, name: str = "KernelUpdateHead") -> nn.Module:
    """Build one update stage ``name`` from ``KERNEL_UPDATE_HEAD_REGISTRY`` with ``cfg``."""
    return KERNEL_UPDATE_HEAD_REGISTRY.get(name)(cfg)
