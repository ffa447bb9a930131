"""K-Net's "localization" semantic FPN (official ``SemanticFPNWrapper``, docs/reference.md §1.2).

Fuses the FPN levels P2..P5 into one stride-8 map and returns two heads of it (with
``MODEL.KNET.NECK.OUT_STRIDE 4``, a stride-4 map: P2's conv has stride 1 and every other branch
ends with one more x2 upsampling, the official ``upsample_times=3``)::

    P2 (s4)       -> conv3x3 s2                                     -+
    P3 (s8)       -> conv3x3                                         |
    P4 (s16)      -> conv3x3 -> up x2 -> conv3x3                     +-> sum = S
    P5 (s32) + PE -> conv3x3 -> up x2 -> conv3x3 -> up x2 -> conv3x3 -+
    loc = conv_pred(S) (1x1),  sem = aux_convs[0](S) (1x1)

Every conv is conv (no bias) + GroupNorm(32) + ReLU (mmcv ``ConvModule``); "up" is bilinear
(align_corners=False). PE = sine positional encoding (num_feats = C/2) *added* to P5.

State-dict keys: identical to the official ``rpn_head.localization_fpn.*`` suffixes, i.e.
``convs_all_levels.{i}.conv{j}.conv.weight`` + ``.gn.{weight,bias}``, ``conv_pred.conv.weight``
+ ``conv_pred.gn.*`` and ``aux_convs.0.conv.weight`` + ``aux_convs.0.gn.*`` (a converter only
rewrites the prefix). The positional encoding has no parameters.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

from .position_encoding import SinePositionalEncoding
from .resize import bilinear_resize

__all__ = ["KNET_NECK_REGISTRY", "build_knet_neck", "ConvNormReLU", "LocalizationFPN"]

KNET_NECK_REGISTRY = Registry("KNET_NECK")
KNET_NECK_REGISTRY.__doc__ = """
Registry for K-Net necks: modules that take the dict of FPN features and return
``(loc_feats, sem_feats)``, each (B, C, H/s, W/s) with s their attribute ``out_stride`` (8, or 4
with ``MODEL.KNET.NECK.OUT_STRIDE 4``). Built by ``build_knet_neck(cfg, input_shape)`` from
``MODEL.KNET.NECK.NAME``.
"""


def _norm_attr_name(norm: str) -> str:
    """mmcv's attribute name for a ConvModule's norm layer: 'gn' for GroupNorm, else 'bn'."""
    return "gn" if norm == "GN" else "bn"


class ConvNormReLU(nn.Module):
    """mmcv-``ConvModule``-like block: ``relu(norm(conv(x)))``.

    Attributes are ``conv`` and ``gn`` (GroupNorm) / ``bn`` (other norms) so state-dict keys
    equal mmcv's (``conv.weight``, ``gn.weight``, ``gn.bias``). The conv has a bias only when
    ``norm`` is "" (no norm).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        norm: str = "GN",
        activation: bool = True,
    ):
        """
        Args:
            in_channels / out_channels: conv channels.
            kernel_size: odd kernel size; padding is ``kernel_size // 2``.
            stride: conv stride.
            norm: a ``detectron2.layers.get_norm`` name ("GN" = 32 groups, "BN", "SyncBN", ...)
                or "" for none.
            activation: apply ReLU at the end.
        """
        super().__init__()
        self.conv = Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=not norm,
        )
        self.norm_name: Optional[str] = None
        if norm:
            self.norm_name = _norm_attr_name(norm)
            self.add_module(self.norm_name, get_norm(norm, out_channels))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, H, W) -> (B, Cout, H', W')."""
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.activation:
            x = F.relu(x, inplace=True)
        return x


@KNET_NECK_REGISTRY.register()
class LocalizationFPN(nn.Module):
    """K-Net localization FPN: FPN levels (strides s, 2s, 4s, ...) -> (loc, sem) at stride 2s.

    Level 0 gets one stride-2 3x3 conv, level 1 one 3x3 conv, level ``i >= 2`` a 3x3 conv
    followed by ``i - 1`` x [bilinear x2 upsample, 3x3 conv]. With the default four levels
    P2..P5 this is exactly the official ``SemanticFPNWrapper(start_level=0, end_level=3,
    upsample_times=2)``.

    Upsampling: the official code uses ``scale_factor=2``. Here each upsample resizes to the
    spatial size of the next finer input level (and the summed branches to level 1's branch
    size), which is identical to x2 for inputs padded to a multiple of the coarsest stride
    and keeps odd, unpadded sizes working (where x2 would give mismatching shapes).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: List[str],
        conv_dim: int = 256,
        norm: str = "GN",
        pos_encoding_level: int = 3,
        out_stride: int = 0,
    ):
        """
        Args:
            input_shape: shapes of the input features (must contain ``in_features``).
            in_features: names of the input levels, finest first, strides log2-contiguous
                (at least 2 levels). All must have the same channel count.
            conv_dim: channels of every conv (feat = out channels, 256 officially).
            norm: norm of every conv ("GN" = GroupNorm(32) officially).
            pos_encoding_level: index into ``in_features`` of the level that gets the sine
                positional encoding added to its input (3 = P5); negative disables it.
            out_stride: stride of the outputs: 2s (level 1's, the official K-Net layout; also
                for 0) or s (level 0's: level 0 keeps its resolution and every coarser level
                is upsampled once more, the official ``upsample_times=3``).
        """
        super().__init__()
        assert len(in_features) >= 2, in_features
        strides = [input_shape[f].stride for f in in_features]
        for a, b in zip(strides[:-1], strides[1:]):
            assert b == 2 * a, f"strides of {in_features} must be log2-contiguous: {strides}"
        in_channels = {input_shape[f].channels for f in in_features}
        assert len(in_channels) == 1, f"all input levels need the same channels: {in_channels}"
        in_ch = in_channels.pop()

        self.in_features = list(in_features)
        if out_stride not in (0, strides[0], strides[1]):
            raise ValueError(
                f"LocalizationFPN: out_stride {out_stride} must be {strides[1]} (the official "
                f"layout) or {strides[0]} (the stride of {in_features[0]})"
            )
        self.out_level = 0 if out_stride == strides[0] else 1
        self.out_stride = strides[self.out_level]
        self.conv_dim = conv_dim
        self.pos_encoding_level = pos_encoding_level if pos_encoding_level >= 0 else -1
        assert self.pos_encoding_level < len(in_features), pos_encoding_level
        if self.pos_encoding_level >= 0:
            assert in_ch % 2 == 0, "positional encoding needs an even channel count"
            self.positional_encoding: Optional[SinePositionalEncoding] = SinePositionalEncoding(
                in_ch // 2
            )
        else:
            self.positional_encoding = None

        self.convs_all_levels = nn.ModuleList()
        for i in range(len(in_features)):
            level = nn.Module()
            if i == 0:
                stride = 2 if self.out_level == 1 else 1
                level.conv0 = ConvNormReLU(in_ch, conv_dim, 3, stride=stride, norm=norm)
            else:
                for j in range(i):
                    ch = in_ch if j == 0 else conv_dim
                    level.add_module(f"conv{j}", ConvNormReLU(ch, conv_dim, 3, norm=norm))
            self.convs_all_levels.append(level)
        self.conv_pred = ConvNormReLU(conv_dim, conv_dim, 1, norm=norm)
        self.aux_convs = nn.ModuleList([ConvNormReLU(conv_dim, conv_dim, 1, norm=norm)])
        self._init_weights()

    def _init_weights(self) -> None:
        """Official init: every Conv2d normal(0, 0.01), bias 0; norms keep (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        return {
            "input_shape": input_shape,
            "in_features": list(cfg.MODEL.KNET.NECK.IN_FEATURES),
            "conv_dim": cfg.MODEL.KNET.NECK.CONV_DIM,
            "norm": cfg.MODEL.KNET.NECK.NORM,
            "pos_encoding_level": cfg.MODEL.KNET.NECK.POS_ENCODING_LEVEL,
            "out_stride": cfg.MODEL.KNET.NECK.OUT_STRIDE,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            features: FPN maps; ``features[in_features[i]]`` is (B, Cin, H_i, W_i) at stride
                ``s * 2**i``.

        Returns:
            ``(loc_feats, sem_feats)``, each (B, conv_dim, H_1, W_1) (stride 2s = 8 for P2..P5),
            where (H_1, W_1) is the size of ``features[in_features[1]]``.
        """
        xs = [features[f] for f in self.in_features]
        sizes = [tuple(x.shape[-2:]) for x in xs]
        target = sizes[self.out_level]
        fused: Optional[torch.Tensor] = None
        for i, (x, level) in enumerate(zip(xs, self.convs_all_levels)):
            if i == self.pos_encoding_level:
                x = x + self.positional_encoding(x)
            if i == 0:
                y = level.conv0(x)
            else:
                y = level.conv0(x)
                for j in range(1, i):
                    # up x2 to the next finer level (level i - j), then conv
                    y = bilinear_resize(y, sizes[i - j])
                    y = getattr(level, f"conv{j}")(y)
            y = bilinear_resize(y, target)
            fused = y if fused is None else fused + y
        loc = self.conv_pred(fused)
        sem = self.aux_convs[0](fused)
        return loc, sem


def build_knet_neck(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the neck named by ``cfg.MODEL.KNET.NECK.NAME`` from ``KNET_NECK_REGISTRY``.

    Args:
        input_shape: output shapes of the backbone (FPN), e.g. ``backbone.output_shape()``.
    """
    return KNET_NECK_REGISTRY.get(cfg.MODEL.KNET.NECK.NAME)(cfg, input_shape)
