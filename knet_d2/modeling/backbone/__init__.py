"""Backbones of knet_d2; importing registers them in Detectron2's ``BACKBONE_REGISTRY``."""
from .fpn import build_knet_resnet_fpn_backbone  # noqa: F401
