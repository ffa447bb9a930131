"""Semantic K-Net (ADE20K): mmseg-style decode heads, the K-Net iterative head, ResNetV1c.

Importing registers ``FCNHead``, ``PSPHead``, ``ASPPHead``, ``UPerHead`` and ``KNetSemSegHead``
in ``SEM_SEG_HEADS_REGISTRY`` and ``build_resnet_v1c_backbone`` in ``BACKBONE_REGISTRY``.
"""
from .decode_heads import PPM, ASPPHead, BaseDecodeHead, FCNHead, PSPHead, mmseg_cross_entropy
from .knet_sem_seg_head import GENERATE_HEADS, KNetSemSegHead
from .resnet_v1c import BasicBlockV1c, build_resnet_v1c_backbone
from .uper_head import UPerHead

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
