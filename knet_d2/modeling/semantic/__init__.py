"""Semantic K-Net (ADE20K): mmseg-style decode heads, the K-Net iterative head, ResNetV1c.

Importing registers ``FCNHead``, ``PSPHead``, ``ASPPHead``, ``UPerHead`` and ``KNetSemSegHead``
in ``SEM_SEG_HEADS_REGISTRY`` and ``build_resnet_v1c_backbone`` in ``BACKBONE_REGISTRY``.
"""
from .decode_heads import (
    GENERATE_HEADS,
    PPM,
    ASPPHead,
    BaseDecodeHead,
    FCNHead,
    PSPHead,
    UPerHead,
    mmseg_cross_entropy,
)
from .knet_sem_seg_head import KNetSemSegHead
from .resnet_v1c import BasicBlockV1c, build_resnet_v1c_backbone

__all__ = [
    "GENERATE_HEADS",
    "PPM",
    "ASPPHead",
    "BaseDecodeHead",
    "FCNHead",
    "PSPHead",
    "UPerHead",
    "mmseg_cross_entropy",
    "KNetSemSegHead",
    "BasicBlockV1c",
    "build_resnet_v1c_backbone",
]
