"""ResNetV1c backbone (deep stem, optional dilation) as used by the mmseg K-Net ADE20K configs.

mmseg ``ResNetV1c`` = ResNet with a *deep stem* (three 3x3 convs 3 -> stem/2 -> stem/2 -> stem,
the first with stride 2, then 3x3/2 max-pool), ``style='pytorch'`` (stride in the 3x3 conv) and,
in the "-D8" configs, ``strides=(1, 2, 1, 1)``, ``dilations=(1, 1, 2, 4)``,
``contract_dilation=True`` (the first block of a dilated stage uses half the dilation). So:

* D8 (FCN / PSP / ASPP): res4 blocks dilations (1, 2, 2, ...), res5 (2, 4, 4); all of
  res3..res5 at stride 8.
* UPerNet: no dilation, strides 4/8/16/32.

Detectron2's DeepLab backbone (``build_resnet_deeplab_backbone``) has the deep stem
(``DeepLabStem``, reused here) and ``RES4_DILATION``, but dilates *every* block of res4/res5
(no ``contract_dilation``) and supports only bottleneck depths, so it cannot express the mmseg
network; :func:`build_resnet_v1c_backbone` can. It reads the usual D2 keys:

* ``MODEL.RESNETS.{DEPTH (18/34/50/101/152), NORM, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS,
  NUM_GROUPS, WIDTH_PER_GROUP, STRIDE_IN_1X1, RES5_DILATION, OUT_FEATURES}``,
  ``MODEL.BACKBONE.FREEZE_AT``;
* from ``add_deeplab_config``: ``MODEL.RESNETS.RES4_DILATION`` (1 if absent) and
  ``MODEL.RESNETS.STEM_TYPE`` ("deeplab" = deep stem, the default here; "basic" = 7x7 stem).

A dilated stage has stride 1 (as in D2's DeepLab builder). For ResNetV1c-50-D8 set
``STEM_OUT_CHANNELS 64``, ``STRIDE_IN_1X1 False``, ``RES4_DILATION 2``, ``RES5_DILATION 4``.
Depths 18/34 use :class:`BasicBlockV1c` (mmseg ``BasicBlock``: dilation on conv1 only) and
accept any ``RES2_OUT_CHANNELS`` (useful for tiny CPU models).

Parameter names are D2's (``stem.conv{1,2,3}{,.norm}``, ``res{2-5}.{j}.conv{1-3}{,.norm}``,
``res{k}.0.shortcut{,.norm}``); mmcv / mmseg checkpoints are renamed to them by
``knet_d2.checkpoint.mmcv_resnet_v1c`` (``tools/convert-mmcv-resnet-v1c-to-d2.py``).
"""
from typing import List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet
from detectron2.projects.deeplab.resnet import DeepLabStem

from ..backbone.resnet_depths import BOTTLENECK_MIN_DEPTH, RESNET_BLOCKS_PER_STAGE

__all__ = [
    "BasicBlockV1c",
    "build_resnet_v1c_backbone",
    "stage_dilations",
]


class BasicBlockV1c(CNNBlockBase):
    """ResNet-18/34 block with optional dilation (mmseg ``BasicBlock``).

    conv1: 3x3, stride ``stride``, dilation/padding ``dilation``; conv2: 3x3, dilation 1.
    Projection shortcut (1x1, stride) when the channels or the resolution change.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        norm: str = "BN",
    ):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels or stride != 1:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
        else:
            self.shortcut = None
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


def stage_dilations(dilation: int, num_blocks: int, contract: bool = True) -> List[int]:
    """Per-block dilations of a stage (mmseg ``ResLayer`` with ``contract_dilation``).

    >>> stage_dilations(4, 3)
    [2, 4, 4]
    """
    first = dilation // 2 if (contract and dilation > 1) else dilation
    return [first] + [dilation] * (num_blocks - 1)


@BACKBONE_REGISTRY.register()
def build_resnet_v1c_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNetV1c(-D8/-D16) backbone from ``MODEL.RESNETS.*`` (see the module docstring).

    Returns:
        D2 :class:`ResNet`; ``output_shape()`` reports stride 8 for dilated res4/res5 (D8).
    """
    r = cfg.MODEL.RESNETS
    norm = r.NORM
    stem_type = r.get("STEM_TYPE", "deeplab")
    if stem_type == "deeplab":
        stem = DeepLabStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=norm)
    elif stem_type == "basic":
        stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=norm)
    else:
        raise ValueError(f"Unknown MODEL.RESNETS.STEM_TYPE {stem_type!r}")

    depth = r.DEPTH
    if depth not in RESNET_BLOCKS_PER_STAGE:
        raise ValueError(f"ResNetV1c depth {depth} not supported")
    res4_dilation = r.get("RES4_DILATION", 1)
    res5_dilation = r.RES5_DILATION
    assert res4_dilation in (1, 2), res4_dilation
    assert res5_dilation in (1, 2, 4), res5_dilation
    if res4_dilation == 2:
        assert res5_dilation == 4, "a dilated res4 requires RES5_DILATION 4"
    out_features = r.OUT_FEATURES
    max_stage = max({"res2": 2, "res3": 3, "res4": 4, "res5": 5}[f] for f in out_features)

    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for idx, stage_idx in enumerate(range(2, max_stage + 1)):
        dilation = {4: res4_dilation, 5: res5_dilation}.get(stage_idx, 1)
        first_stride = 1 if (idx == 0 or dilation > 1) else 2
        n = RESNET_BLOCKS_PER_STAGE[depth][idx]
        kwargs = {
            "num_blocks": n,
            "stride_per_block": [first_stride] + [1] * (n - 1),
            "dilation_per_block": stage_dilations(dilation, n),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        if depth >= BOTTLENECK_MIN_DEPTH:
            kwargs.update(
                block_class=BottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                num_groups=r.NUM_GROUPS,
            )
        else:
            kwargs["block_class"] = BasicBlockV1c
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=out_features).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)

