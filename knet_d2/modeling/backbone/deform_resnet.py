"""Deformable ResNet (R101-DCN of K-Net) without compiled ops.

K-Net R101-DCN (docs/reference.md §1.1) puts a DCNv1 (non-modulated, one deformable group) in
the 3x3 conv of every bottleneck of c3-c5. Detectron2's :class:`DeformBottleneckBlock` runs
its deformable convs through ``detectron2._C``; without a compiled detectron2 the classes
``DeformConv``/``ModulatedDeformConv`` are placeholders that raise ``ImportError`` when built.
This module provides:

* :class:`DeformConv2d`: a deformable conv (DCNv1, or DCNv2 when a mask is passed) on
  ``torchvision.ops.deform_conv2d`` (CPU + CUDA kernels with autograd ship with torchvision),
  supporting ``groups`` and ``deformable_groups``.
* :class:`DeformBottleneckBlock`: a drop-in for D2's block of the same name, with the same
  constructor, the same parameter names and shapes (``conv1``, ``conv2_offset``, ``conv2``
  (weight, no bias, ``.norm``), ``conv3``, ``shortcut``) and the same initialisation (same RNG
  draws in the same order, so one seed gives bit-identical weights), hence D2 checkpoints load.
* :func:`build_knet_resnet_backbone`: D2's ``build_resnet_backbone`` (same ``MODEL.RESNETS.*``
  keys, freezing and names) using this block where ``DEFORM_ON_PER_STAGE[i]`` is True.

Offset / mask channel layout (``conv2_offset`` output, (B, C, H_out, W_out), K = 9 kernel
points in row-major order, G = deformable groups):

* DCNv1 (``deform_modulated=False``): C = 18 G; channel ``g*18 + 2k`` is the y (row) offset and
  ``g*18 + 2k + 1`` the x (column) offset of kernel point k of group g.
* DCNv2 (``deform_modulated=True``): C = 27 G; as in D2's ``DeformBottleneckBlock.forward``
  (``torch.chunk(offset_mask, 3, dim=1)``, then the first two chunks concatenated), the first
  18 G channels are the offsets laid out as above and the last 9 G the mask logits (channel
  ``18 G + g*9 + k``), passed through a sigmoid. mmcv's ``ModulatedDeformConv2dPack`` splits its
  ``conv_offset`` output the same way (mmcv/ops/modulated_deform_conv.py, lines 329-331 at
  open-mmlab/mmcv@a8073c7: chunk into 3, concat the first two, sigmoid of the third).

mmcv (and so official mmdet K-Net checkpoints) uses the same layout, so an mmdet DCN
checkpoint's ``layer{i}.{j}.conv2.conv_offset.{weight,bias}`` copies **unchanged** into
``res{i+1}.{j}.conv2_offset.{weight,bias}`` (the rename is in
``knet_d2/checkpoint/torchvision_resnet.py``):

* mmcv ``DeformConv2dPack`` (registered as ``'DCN'``; mmcv/ops/deform_conv.py lines 367-401 at
  open-mmlab/mmcv@a8073c7) computes the offsets with ``conv_offset = nn.Conv2d(in,
  deform_groups * 2 * kh * kw, kernel_size, stride, padding, dilation, bias=True)``, zero-init -
  the same conv as D2's ``conv2_offset``. Its docstring (line 322) states the order
  ``[y0, x0, y1, x1, ..., y8, x8]``. Its ``_load_from_state_dict`` (lines 417-432) loads the
  pre-2.0 mmdet name ``conv2_offset.*`` (= D2's name) into ``conv2.conv_offset.*`` unchanged.
* The kernel, mmcv/ops/csrc/common/cuda/deform_conv_cuda_kernel.cuh
  (``deformable_im2col_gpu_kernel``, lines 217-232 at open-mmlab/mmcv@a8073c7; unchanged since
  mmcv 1.0, last touched by a directory refactor in 2021-08), reads group g at
  ``(b * G + g) * 2 * kh * kw * H_out * W_out``, ``offset_h`` from channel ``2 * (i * kw + j)``
  and ``offset_w`` from ``2 * (i * kw + j) + 1``, and samples at
  ``h_in + i * dilation + offset_h``, ``w_in + j * dilation + offset_w`` (bilinear, zero outside;
  the CPU version mmcv/ops/csrc/pytorch/cpu/deform_conv.cpp lines 140-155 is identical). The
  modulated kernel (modulated_deform_conv_cuda_kernel.cuh lines 214-230) reads mask channel
  ``g * kh * kw + (i * kw + j)``.
* torchvision's kernel (torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp,
  ``deformable_im2col_kernel``, about lines 159-187 at pytorch/vision@0f030ff; both files derive
  from the same MSRA/mmdet code) uses exactly the same indexing: ``offset_idx = 2 * (i * kw +
  j)`` -> ``offset_h``, ``offset_idx + 1`` -> ``offset_w``, group stride ``2 * kh * kw``, mask
  ``(b * G + g) * kh * kw + i * kw + j``, the same bilinear sampling (zero outside
  ``(-1, H) x (-1, W)``). D2 itself relies on this: its CPU path of ``_DeformConv.forward``
  calls ``torchvision.ops.deform_conv2d`` with the unchanged offsets.

``tests/modeling/test_deform_resnet.py`` checks the (dy, dx) per-kernel-point layout of
``torchvision.ops.deform_conv2d`` numerically against a slow bilinear reference.
"""
from typing import Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

from .resnet_depths import RESNET_BLOCKS_PER_STAGE

__all__ = [
    "DeformConv2d",
    "DeformBottleneckBlock",
    "build_knet_resnet_backbone",
]


class DeformConv2d(nn.Module):
    """Deformable 2D convolution on ``torchvision.ops.deform_conv2d`` (no compiled D2 ops).

    Same constructor and attributes as D2's ``DeformConv`` (``weight`` of shape
    (C_out, C_in / groups, kh, kw), optional ``bias``, ``norm``, ``activation``); ``forward``
    takes an optional ``mask``, which makes it D2's ``ModulatedDeformConv`` (DCNv2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
        activation=None,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by deformable_groups "
                f"({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")  # as D2's DeformConv

    def forward(
        self, x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Deformable conv (+ norm + activation).

        Args:
            x: (B, C_in, H, W).
            offset: (B, 2 * G * kh * kw, H_out, W_out); per group g and kernel point k
                (row-major), channel ``g*2*kh*kw + 2k`` is the y offset, ``+ 1`` the x offset.
            mask: optional (B, G * kh * kw, H_out, W_out) modulation (already in [0, 1]).

        Returns:
            (B, C_out, H_out, W_out).
        """
        k = self.kernel_size[0] * self.kernel_size[1]
        if offset.shape[1] != 2 * self.deformable_groups * k:
            raise ValueError(
                f"offset has {offset.shape[1]} channels, expected "
                f"2 * deformable_groups * kh * kw = {2 * self.deformable_groups * k}"
            )
        if mask is not None and mask.shape[1] != self.deformable_groups * k:
            raise ValueError(
                f"mask has {mask.shape[1]} channels, expected {self.deformable_groups * k}"
            )
        # torchvision has no half/bfloat16 CPU kernel: compute reduced precision in float32.
        dtype = x.dtype
        compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        out = deform_conv2d(
            x.to(compute),
            offset.to(compute),
            self.weight.to(compute),
            None if self.bias is None else self.bias.to(compute),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=None if mask is None else mask.to(compute),
        ).to(dtype)
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, "
            f"deformable_groups={self.deformable_groups}, bias={self.bias is not None}"
        )


class DeformBottleneckBlock(CNNBlockBase):
    """Bottleneck block with a deformable 3x3 conv: drop-in for D2's ``DeformBottleneckBlock``.

    ``x`` (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride). ``conv2_offset``
    (3x3, same stride/dilation as ``conv2``, with bias, zero-initialised, so the block starts as
    a plain bottleneck) predicts 18 G channels (DCNv1) or 27 G (DCNv2: 18 G offsets, then 9 G
    mask logits), G = ``deform_num_groups``; see the module docstring for the layout.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.deform_modulated = deform_modulated
        # Modules are created (and initialised) in D2's order, so a seed gives D2's weights.
        if in_channels != out_channels:
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
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        per_group = 27 if deform_modulated else 18
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            per_group * deform_num_groups,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = DeformConv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
            deformable_groups=deform_num_groups,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                weight_init.c2_msra_fill(layer)
        nn.init.zeros_(self.conv2_offset.weight)
        nn.init.zeros_(self.conv2_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        offset = self.conv2_offset(out)
        mask = None
        if self.deform_modulated:
            num_offsets = offset.shape[1] * 2 // 3  # 18 G offsets, then 9 G mask logits
            offset, mask = offset[:, :num_offsets], offset[:, num_offsets:].sigmoid()
        out = F.relu_(self.conv2(out, offset, mask))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


@BACKBONE_REGISTRY.register()
def build_knet_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """D2's ``build_resnet_backbone`` with a pure-PyTorch deformable bottleneck.

    Reads the same keys (``MODEL.RESNETS.{DEPTH, NORM, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS,
    NUM_GROUPS, WIDTH_PER_GROUP, STRIDE_IN_1X1, RES5_DILATION, OUT_FEATURES,
    DEFORM_ON_PER_STAGE, DEFORM_MODULATED, DEFORM_NUM_GROUPS}``, ``MODEL.BACKBONE.FREEZE_AT``)
    with the same checks, and returns the same :class:`ResNet` (module names
    ``stem``, ``res2``..``res5``; same freezing), except that stages with
    ``DEFORM_ON_PER_STAGE[i]`` use :class:`DeformBottleneckBlock` from this module.

    Returns:
        A ResNet whose outputs ``res{k}`` are (B, C_k, H / 2^k, W / 2^k) (res5 at stride 16 when
        ``RES5_DILATION`` is 2).
    """
    r = cfg.MODEL.RESNETS
    depth = r.DEPTH
    if depth not in RESNET_BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH must be one of {sorted(RESNET_BLOCKS_PER_STAGE)}, got {depth}"
        )
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    deform_on = list(r.DEFORM_ON_PER_STAGE)
    if len(deform_on) != 4:
        raise ValueError(f"MODEL.RESNETS.DEFORM_ON_PER_STAGE needs 4 entries, got {deform_on}")
    if depth in (18, 34):
        basic_ok = (r.RES2_OUT_CHANNELS, r.NUM_GROUPS, r.RES5_DILATION) == (64, 1, 1)
        if not basic_ok or any(deform_on):
            raise ValueError(
                "R18/R34 need MODEL.RESNETS.RES2_OUT_CHANNELS 64, NUM_GROUPS 1, "
                "RES5_DILATION 1 and no DEFORM_ON_PER_STAGE (as D2's build_resnet_backbone)"
            )

    stem = BasicStem(
        in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM
    )
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for idx, num_blocks in enumerate(RESNET_BLOCKS_PER_STAGE[depth]):
        dilation = r.RES5_DILATION if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        kwargs = dict(
            num_blocks=num_blocks,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            norm=r.NORM,
        )
        if depth in (18, 34):
            kwargs["block_class"] = BasicBlock
        else:
            kwargs.update(
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=r.NUM_GROUPS,
                block_class=BottleneckBlock,
            )
            if deform_on[idx]:
                kwargs.update(
                    block_class=DeformBottleneckBlock,
                    deform_modulated=r.DEFORM_MODULATED,
                    deform_num_groups=r.DEFORM_NUM_GROUPS,
                )
        stages.append(ResNet.make_stage(**kwargs))
        in_channels, out_channels = out_channels, out_channels * 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)

