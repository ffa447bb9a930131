"""Backbones of knet_d2; importing registers them in Detectron2's ``BACKBONE_REGISTRY``."""
from .deform_resnet import build_knet_resnet_backbone  # noqa: F401
from .fpn import build_knet_resnet_fpn_backbone, build_knet_swin_fpn_backbone  # noqa: F401
from .swin import SwinTransformer, build_swin_backbone  # noqa: F401
