"""Semantic K-Net head (official ``IterativeDecodeHead``; docs/reference.md §1.5, §2.3, §3).

With a kernel-generation head G (FCN / PSP / ASPP / UPerNet, ``MODEL.KNET.SEM.GENERATE_HEAD``)::

    feats  = G.forward_features(features)                 (B, C, h, w), pre-dropout
    seg_0  = G.conv_seg(dropout(feats))                   (B, K, h, w)
    K_0    = G.conv_seg.weight[:, :, 0, 0]                (K, C) broadcast to (B, K, C); no bias
    for i in 1..S:  K_i, seg_i = update_i(feats, K_{i-1}, seg_{i-1})
                                                          soft grouping softmax(seg_{i-1}, dim=1)

One kernel per class (no matching, no class branch). Training: CE (ignore
``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``, weight ``MODEL.KNET.SEM.LOSS_WEIGHT``, mmseg averaging over
all pixels) on every ``seg_i`` bilinearly resized to the label size -> ``loss_ce_s0`` ..
``loss_ce_s{S}``; plus the auxiliary FCN head on ``AUX_IN_FEATURE`` -> ``loss_aux_ce``
(x ``AUX_LOSS_WEIGHT``). Inference: ``seg_S`` resized to (feature size x stride), i.e. the padded
input, which D2's ``SemanticSegmentor`` crops and resizes to the output size.

Checkpoint layout (mmseg ``decode_head.*`` / ``auxiliary_head.*``): ``kernel_generate_head.*``
(see :mod:`.decode_heads` for ConvModule key renames), ``kernel_update_head.{i}.*`` (see
:mod:`knet_d2.modeling.kernel_update_head`), ``auxiliary_head.*``.
"""
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..kernel_update_head import KernelUpdateHead
from ..resize import bilinear_resize
from .decode_heads import ASPPHead, BaseDecodeHead, FCNHead, PSPHead, mmseg_cross_entropy
from .uper_head import UPerHead

__all__ = ["GENERATE_HEADS", "KNetSemSegHead"]

# MODEL.KNET.SEM.GENERATE_HEAD -> head class.
GENERATE_HEADS: Dict[str, Callable[..., BaseDecodeHead]] = {
    "FCN": FCNHead,
    "PSP": PSPHead,
    "ASPP": ASPPHead,
    "UPerNet": UPerHead,
}


@SEM_SEG_HEADS_REGISTRY.register()
class KNetSemSegHead(nn.Module):
    """Iterative kernel-update decode head for semantic segmentation (D2 sem-seg head contract).

    ``forward(features, targets)`` -> training ``(None, losses)``, inference
    ``(logits (B, K, H_pad, W_pad), {})``.
    """

    @configurable
    def __init__(
        self,
        *,
        kernel_generate_head: BaseDecodeHead,
        kernel_update_heads: List[nn.Module],
        auxiliary_head: Optional[BaseDecodeHead] = None,
        loss_weight: float = 1.0,
        aux_loss_weight: float = 0.4,
        ignore_value: int = 255,
    ):
        """
        Args:
            kernel_generate_head: decode head providing ``forward_features``, ``cls_seg``,
                ``conv_seg`` (K, C, 1, 1) and ``common_stride``.
            kernel_update_heads: S update stages, ``forward(feats (B, C, h, w), kernels
                (B, K, C), logits (B, K, h, w)) -> (kernels, logits (B, K, h, w), None)``.
            auxiliary_head: optional head whose CE is added in training (weight
                ``aux_loss_weight``); unused at inference.
            loss_weight: weight of each of the S+1 CE losses.
            ignore_value: label ignored by the losses (also used by SemanticSegmentor to pad).
        """
        super().__init__()
        self.kernel_generate_head = kernel_generate_head
        self.kernel_update_head = nn.ModuleList(kernel_update_heads)
        self.auxiliary_head = auxiliary_head
        self.loss_weight = loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.ignore_value = ignore_value
        self.num_classes = kernel_generate_head.num_classes
        self.common_stride = kernel_generate_head.common_stride

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        k = cfg.MODEL.KNET
        sem = k.SEM
        if sem.GENERATE_HEAD not in GENERATE_HEADS:
            raise ValueError(
                f"MODEL.KNET.SEM.GENERATE_HEAD {sem.GENERATE_HEAD!r} not in {list(GENERATE_HEADS)}"
            )
        gen = GENERATE_HEADS[sem.GENERATE_HEAD](cfg, input_shape)
        updates = [
            KernelUpdateHead(
                in_channels=sem.CHANNELS,
                num_classes=0,
                num_heads=k.NUM_HEADS,
                feedforward_channels=k.FFN_DIM,
                num_ffn_fcs=k.NUM_FFN_FCS,
                num_cls_fcs=0,
                num_mask_fcs=k.NUM_MASK_FCS,
                dropout=k.DROPOUT,
                updator_channels=sem.UPDATOR_CHANNELS,
                mask_act="softmax",
                hard_mask_thr=k.HARD_MASK_THR,
                xavier_init=False,
            )
            for _ in range(k.NUM_STAGES)
        ]
        aux = None
        if sem.AUX_LOSS_WEIGHT > 0:
            aux = FCNHead(
                {sem.AUX_IN_FEATURE: input_shape[sem.AUX_IN_FEATURE]},
                channels=sem.AUX_CHANNELS,
                num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                dropout=sem.DROPOUT,
                norm=cfg.MODEL.SEM_SEG_HEAD.NORM,
                ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                loss_weight=sem.AUX_LOSS_WEIGHT,
                num_convs=1,
                concat_input=False,
            )
        return {
            "kernel_generate_head": gen,
            "kernel_update_heads": updates,
            "auxiliary_head": aux,
            "loss_weight": sem.LOSS_WEIGHT,
            "aux_loss_weight": sem.AUX_LOSS_WEIGHT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Backbone features -> the S+1 stage logits, each (B, K, h, w) at ``common_stride``."""
        gen = self.kernel_generate_head
        feats = gen.forward_features(features)
        seg = gen.cls_seg(feats)
        kernels = gen.conv_seg.weight.flatten(1)  # (K, C); the bias is not part of the kernel
        kernels = kernels.unsqueeze(0).expand(feats.shape[0], -1, -1)
        stage_segs = [seg]
        for stage in self.kernel_update_head:
            kernels, seg, _ = stage(feats, kernels, seg)
            stage_segs.append(seg)
        return stage_segs

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Args:
            features: backbone outputs, name -> (B, C_i, H/s_i, W/s_i).
            targets: (B, H, W) int64 labels at the padded input size (required in training).
        """
        stage_segs = self.layers(features)
        if self.training:
            assert targets is not None, "KNetSemSegHead needs targets in training"
            return None, self.losses(stage_segs, features, targets)
        seg = stage_segs[-1]
        h, w = seg.shape[-2:]
        size = (h * self.common_stride, w * self.common_stride)
        return bilinear_resize(seg, size), {}

    def losses(
        self,
        stage_segs: List[torch.Tensor],
        features: Dict[str, torch.Tensor],
        targets: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """``loss_ce_s{i}`` for every stage output (+ ``loss_aux_ce``), all already weighted."""
        losses = {
            f"loss_ce_s{i}": self.loss_weight
            * mmseg_cross_entropy(seg, targets, self.ignore_value)
            for i, seg in enumerate(stage_segs)
        }
        if self.auxiliary_head is not None:
            aux_logits = self.auxiliary_head.layers(features)
            losses["loss_aux_ce"] = self.aux_loss_weight * mmseg_cross_entropy(
                aux_logits, targets, self.ignore_value
            )
        return losses
