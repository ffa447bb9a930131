"""UPerNet decode head (mmseg ``UPerHead``): a PPM on the coarsest level plus an FPN over all
levels; the building blocks and the checkpoint-key conventions are those of :mod:`.decode_heads`.
"""
from typing import Dict, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..resize import bilinear_resize
from .decode_heads import PPM, BaseDecodeHead, conv_norm_relu

__all__ = ["UPerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class UPerHead(BaseDecodeHead):
    """UPerNet head (mmseg ``UPerHead``) on L >= 2 levels (finest first, e.g. res2..res5).

    * ``laterals[L-1] = bottleneck(cat[x_{L-1}, PPM(x_{L-1})])`` (3x3), the others
      ``lateral_convs[i](x_i)`` (1x1);
    * top-down: ``laterals[i-1] += resize(laterals[i])`` for i = L-1..1;
    * ``outs[i] = fpn_convs[i](laterals[i])`` (3x3) for i < L-1, ``outs[L-1] = laterals[L-1]``;
    * ``feats = fpn_bottleneck(cat[resize(outs[i]) to the finest size])`` (3x3, L*C -> C).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        **kwargs,
    ):
        """
        Args:
            input_shape: >= 2 features.
            pool_scales: PPM scales on the coarsest level.
            **kwargs: see :class:`BaseDecodeHead`.
        """
        assert len(input_shape) >= 2, "UPerHead needs at least two feature maps"
        super().__init__(input_shape, **kwargs)
        c, norm = self.channels, self.norm
        self.psp_modules = PPM(pool_scales, self.in_channels[-1], c, norm)
        self.bottleneck = conv_norm_relu(
            self.in_channels[-1] + len(pool_scales) * c, c, 3, padding=1, norm=norm
        )
        self.lateral_convs = nn.ModuleList(
            conv_norm_relu(cin, c, 1, norm=norm) for cin in self.in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            conv_norm_relu(c, c, 3, padding=1, norm=norm) for _ in self.in_channels[:-1]
        )
        self.fpn_bottleneck = conv_norm_relu(
            len(self.in_channels) * c, c, 3, padding=1, norm=norm
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        sem = cfg.MODEL.KNET.SEM
        ret = cls._base_config(cfg, input_shape, sem.IN_FEATURES)
        ret["pool_scales"] = tuple(sem.PSP_POOL_SCALES)
        return ret

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coarsest level (B, Cin, h, w) -> (B, C, h, w)."""
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))

    def forward_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        xs = [features[k] for k in self.in_features]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, xs[:-1])]
        laterals.append(self.psp_forward(xs[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            upsampled = bilinear_resize(laterals[i], laterals[i - 1].shape[-2:])
            laterals[i - 1] = laterals[i - 1] + upsampled
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([bilinear_resize(o, size) for o in outs], dim=1))
