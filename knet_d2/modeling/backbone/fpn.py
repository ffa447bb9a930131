"""ResNet + FPN backbone of K-Net (docs/reference.md §1.1).

mmdet ``FPN(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=4)`` on ResNet
c2..c5 = Detectron2's :class:`FPN` *without* a top block: 1x1 lateral + 3x3 output convs (with
bias, no norm), nearest top-down upsampling, sum; outputs ``p2..p5`` (strides 4..32).

Differences to mmdet, both irrelevant on inputs padded to a multiple of 32 (K-Net pads so):

* D2 upsamples the top-down path with ``scale_factor=2``; mmdet resizes to the lateral's size.
* Init: the FPN convs are re-initialised like mmdet's FPN (``Xavier(distribution='uniform')``,
  bias 0) instead of D2's ``c2_xavier_fill`` (they differ only for the 1x1 laterals).

State-dict mapping (official ``neck.`` -> here ``backbone.``): ``lateral_convs.{i}.conv`` ->
``fpn_lateral{i+2}``, ``fpn_convs.{i}.conv`` -> ``fpn_output{i+2}``; ResNet as in D2.
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from torch import nn

from .deform_resnet import build_knet_resnet_backbone

__all__ = [
    "build_knet_resnet_fpn_backbone",
    "build_knet_resnet_v1c_fpn_backbone",
    "build_knet_swin_fpn_backbone",
    "mmdet_fpn_init_",
]


def mmdet_fpn_init_(fpn: FPN) -> None:
    """Re-initialise the lateral/output convs of a D2 ``FPN`` as mmdet does (in place).

    Every ``nn.Conv2d`` directly owned by the FPN (not its bottom-up network) gets
    ``xavier_uniform_`` weights (gain 1) and zero bias.
    """
    for name, module in fpn.named_modules():
        if name.startswith("bottom_up") or not isinstance(module, nn.Conv2d):
            continue
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0.0)


@BACKBONE_REGISTRY.register()
def build_knet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """D2 ResNet (``MODEL.RESNETS.*``) + FPN (``MODEL.FPN.*``) with no extra levels.

    The ResNet comes from :func:`build_knet_resnet_backbone` (= D2's ``build_resnet_backbone``
    whose ``DEFORM_ON_PER_STAGE`` stages run without compiled ops).

    Args:
        cfg: a detectron2 CfgNode.
        input_shape: shape of the input image (channels).

    Returns:
        An :class:`FPN` backbone whose outputs are ``{"p2", ..., "p5"}`` (for
        ``MODEL.FPN.IN_FEATURES = [res2..res5]``), each (B, FPN.OUT_CHANNELS, H/s, W/s).
    """
    return _fpn_on(cfg, build_knet_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_knet_resnet_v1c_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """ResNetV1c (deep stem, any width: ``build_resnet_v1c_backbone``) + FPN, outputs p2..p5.

    Used by the small synthetic-data configs, whose narrow ResNet-18 (32 base channels) D2's
    own ResNet builder does not allow.
    """
    from ..semantic.resnet_v1c import build_resnet_v1c_backbone

    return _fpn_on(cfg, build_resnet_v1c_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_knet_swin_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Swin Transformer (``MODEL.SWIN.*``) + the same FPN, outputs p2..p5 (strides 4..32).

    The official Swin-L panoptic K-Net (docs/reference.md §1.1): FPN on res2..res5 with
    in_channels (C, 2C, 4C, 8C). Swin weights load under ``backbone.bottom_up.``.
    """
    from .swin import build_swin_backbone

    return _fpn_on(cfg, build_swin_backbone(cfg, input_shape))


def _fpn_on(cfg, bottom_up: Backbone) -> Backbone:
    backbone = FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=None,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    mmdet_fpn_init_(backbone)
    return backbone
