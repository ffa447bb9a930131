"""mmseg-style semantic decode heads for Detectron2: shared building blocks (ConvModule, PPM,
loss, :class:`BaseDecodeHead`) and the single-map heads FCN, PSPNet and DeepLabV3/ASPP. The
multi-level UPerNet head built on them is in :mod:`.uper_head`.

Each head is registered in ``SEM_SEG_HEADS_REGISTRY`` and works alone with D2's
``SemanticSegmentor`` (own cross-entropy loss, key ``loss_sem_seg``). The same classes are the
kernel-generation heads of semantic K-Net (:class:`~knet_d2.modeling.semantic.KNetSemSegHead`,
docs/reference.md §1.5), which needs two things from them:

* :meth:`BaseDecodeHead.forward_features` -> ``feats`` (B, C, h, w), **before** dropout
  (mmseg ``_forward_feature``);
* ``conv_seg``: the 1x1 classifier ``Conv2d(C, num_classes, 1)`` whose weight gives K-Net's
  initial kernels; :meth:`BaseDecodeHead.cls_seg` = ``conv_seg(dropout(feats))``.

Semantics follow mmseg 0.x (the code base of the official K-Net): every "ConvModule" is
conv (no bias when normalised) + norm + ReLU, Kaiming-normal (fan_out) init (= D2's
``c2_msra_fill``); ``conv_seg`` is normal(std 0.01), bias 0; ``Dropout2d`` before ``conv_seg``;
all resizes are bilinear with ``align_corners=False``.

Checkpoint layout: the module attribute names are mmseg's (``conv_seg``, ``convs``,
``conv_cat``, ``psp_modules``, ``bottleneck``, ``image_pool``, ``aspp_modules``,
``lateral_convs``, ``fpn_convs``, ``fpn_bottleneck``). A ConvModule is a single D2 ``Conv2d``
here, so an mmseg key ``<m>.conv.weight`` maps to ``<m>.weight`` and ``<m>.bn.*`` to
``<m>.norm.*`` (e.g. ``psp_modules.0.1.conv.weight`` -> ``psp_modules.0.1.weight``,
``image_pool.1.bn.running_mean`` -> ``image_pool.1.norm.running_mean``); ``conv_seg.*`` is
unchanged.

Config (``from_config``): architecture from ``MODEL.KNET.SEM.*`` (``IN_FEATURES``, ``CHANNELS``,
``DROPOUT``, ``FCN_*``, ``PSP_POOL_SCALES``, ``ASPP_DILATIONS``); ``num_classes``,
``ignore_value``, ``norm`` and the standalone ``loss_weight`` from ``MODEL.SEM_SEG_HEAD.*``.
FCN/PSP/ASPP read only the **last** entry of ``IN_FEATURES`` (mmseg ``in_index=3``), UPerNet
all of them (finest first).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..resize import bilinear_resize

__all__ = [
    "BaseDecodeHead",
    "FCNHead",
    "PSPHead",
    "ASPPHead",
    "PPM",
    "conv_norm_relu",
    "mmseg_cross_entropy",
]


def conv_norm_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    padding: int = 0,
    dilation: int = 1,
    norm: str = "BN",
) -> Conv2d:
    """mmcv ``ConvModule``: conv (bias only without norm) -> norm -> ReLU, Kaiming init.

    Returns a D2 :class:`~detectron2.layers.Conv2d`; its norm (if any) is ``.norm``.
    """
    norm_layer = get_norm(norm, out_channels)
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=padding,
        dilation=dilation,
        bias=norm_layer is None,
        norm=norm_layer,
        activation=F.relu,
    )
    weight_init.c2_msra_fill(conv)
    return conv


def mmseg_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_value: int
) -> torch.Tensor:
    """Softmax cross-entropy as mmseg 0.x ``CrossEntropyLoss(use_sigmoid=False)``.

    Args:
        logits: (B, K, h, w), bilinearly resized (align_corners=False) to the label size.
        targets: (B, H, W) int64 class ids; ``ignore_value`` pixels contribute 0.
        ignore_value: label to ignore.

    Returns:
        Scalar: per-pixel loss averaged over **all** B*H*W pixels, ignored ones included
        (mmseg's default ``avg_non_ignore=False``; PyTorch's "mean" would divide by the number of
        non-ignored pixels instead). It is 0, not NaN, when every pixel is ignored.
    """
    logits = bilinear_resize(logits, targets.shape[-2:])
    loss = F.cross_entropy(logits.float(), targets, ignore_index=ignore_value, reduction="none")
    return loss.mean()


class PPM(nn.ModuleList):
    """Pyramid pooling module: per scale s, AdaptiveAvgPool2d(s) -> 1x1 ConvModule -> resize.

    Children ``{i}`` are ``Sequential(AdaptiveAvgPool2d(s_i), conv_norm_relu)`` so keys read
    ``{i}.1.weight`` / ``{i}.1.norm.*`` (mmseg ``{i}.1.conv.weight`` / ``{i}.1.bn.*``).
    """

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int, norm: str):
        super().__init__(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(s), conv_norm_relu(in_channels, channels, 1, norm=norm)
            )
            for s in pool_scales
        )

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, Cin, h, w) -> list of len(pool_scales) tensors (B, channels, h, w)."""
        return [bilinear_resize(m(x), x.shape[-2:]) for m in self]


class BaseDecodeHead(nn.Module):
    """Common part of the decode heads: classifier, dropout, loss and the D2 head contract.

    Subclasses implement :meth:`forward_features`. ``forward(features, targets)`` follows D2's
    ``SemanticSegmentor`` contract: training -> ``(None, {"loss_sem_seg": ...})``;
    inference -> ``(logits (B, K, s*h, s*w), {})`` with ``s = common_stride`` (the stride of
    ``feats``), i.e. logits at the (padded) input resolution.
    """

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        channels: int,
        num_classes: int,
        dropout: float = 0.1,
        norm: str = "BN",
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ):
        """
        Args:
            input_shape: the input features used by this head (name -> ShapeSpec); sorted by
                stride here, finest first.
            channels: width of the head (mmseg ``channels``), also the channels of ``feats``.
            num_classes: number of classes K (``conv_seg`` outputs).
            dropout: ``Dropout2d`` probability before ``conv_seg`` (0 disables).
            norm: D2 norm name of the ConvModules ("BN", "SyncBN", "GN", "" ...).
            ignore_value: label ignored by the loss.
            loss_weight: weight of the standalone loss ``loss_sem_seg``.
        """
        super().__init__()
        items = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features: List[str] = [k for k, _ in items]
        self.in_channels: List[int] = [v.channels for _, v in items]
        self.common_stride: int = items[0][1].stride
        self.channels = channels
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.norm = norm
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    @classmethod
    def _base_config(
        cls, cfg, input_shape: Dict[str, ShapeSpec], in_features: Sequence[str]
    ) -> Dict:
        sem = cfg.MODEL.KNET.SEM
        return {
            "input_shape": {k: input_shape[k] for k in in_features},
            "channels": sem.CHANNELS,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "dropout": sem.DROPOUT,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone features -> ``feats`` (B, channels, h, w) at ``common_stride``, pre-dropout."""
        raise NotImplementedError

    def cls_seg(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> logits (B, K, h, w) = conv_seg(dropout(feats))."""
        return self.conv_seg(self.dropout(feats))

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone features -> logits (B, K, h, w) at ``common_stride``."""
        return self.cls_seg(self.forward_features(features))

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Args:
            features: backbone outputs, name -> (B, C_i, H/s_i, W/s_i).
            targets: (B, H, W) int64 labels at the padded input size (training only).
        """
        logits = self.layers(features)
        if self.training:
            assert targets is not None, f"{type(self).__name__} needs targets in training"
            return None, self.losses(logits, targets)
        h, w = logits.shape[-2:]
        return bilinear_resize(logits, (h * self.common_stride, w * self.common_stride)), {}

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{"loss_sem_seg": loss_weight * CE(resize(logits), targets)}`` (mmseg averaging)."""
        return {
            "loss_sem_seg": self.loss_weight
            * mmseg_cross_entropy(logits, targets, self.ignore_value)
        }


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(BaseDecodeHead):
    """FCN head (mmseg ``FCNHead``) on one feature map.

    ``feats = conv_cat(cat[x, convs(x)])`` if ``concat_input`` else ``convs(x)``, where
    ``convs`` = ``num_convs`` k x k ConvModules (first Cin -> C, then C -> C). Used as K-Net
    generation head (2 convs, concat, C=512) and as the auxiliary head (1 conv, no concat, 256).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_convs: int = 2,
        kernel_size: int = 3,
        dilation: int = 1,
        concat_input: bool = True,
        **kwargs,
    ):
        """
        Args:
            input_shape: exactly one feature.
            num_convs: number of ConvModules (0 requires Cin == channels: identity).
            kernel_size, dilation: of those convs (padding = kernel_size // 2 * dilation).
            concat_input: concat the input with the conv output and fuse with ``conv_cat``
                (a k x k ConvModule, Cin + C -> C).
            **kwargs: see :class:`BaseDecodeHead`.
        """
        assert len(input_shape) == 1, "FCNHead takes a single feature map"
        super().__init__(input_shape, **kwargs)
        cin, c = self.in_channels[0], self.channels
        pad = kernel_size // 2 * dilation
        self.num_convs = num_convs
        self.concat_input = concat_input
        if num_convs == 0:
            assert cin == c, "num_convs=0 needs in_channels == channels"
            self.convs = nn.Identity()
        else:
            self.convs = nn.Sequential(
                *[
                    conv_norm_relu(
                        cin if i == 0 else c,
                        c,
                        kernel_size,
                        padding=pad,
                        dilation=dilation,
                        norm=self.norm,
                    )
                    for i in range(num_convs)
                ]
            )
        if concat_input:
            self.conv_cat = conv_norm_relu(
                cin + c, c, kernel_size, padding=kernel_size // 2, norm=self.norm
            )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        sem = cfg.MODEL.KNET.SEM
        ret = cls._base_config(cfg, input_shape, sem.IN_FEATURES[-1:])
        ret.update(num_convs=sem.FCN_NUM_CONVS, concat_input=sem.FCN_CONCAT_INPUT)
        return ret

    def forward_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.in_features[0]]
        feats = self.convs(x)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return feats


@SEM_SEG_HEADS_REGISTRY.register()
class PSPHead(BaseDecodeHead):
    """PSPNet head (mmseg ``PSPHead``): ``bottleneck(cat[x, PPM(x)])``, bottleneck = 3x3."""

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
            input_shape: exactly one feature.
            pool_scales: output sizes of the adaptive average pools.
            **kwargs: see :class:`BaseDecodeHead`.
        """
        assert len(input_shape) == 1, "PSPHead takes a single feature map"
        super().__init__(input_shape, **kwargs)
        cin, c = self.in_channels[0], self.channels
        self.psp_modules = PPM(pool_scales, cin, c, self.norm)
        self.bottleneck = conv_norm_relu(
            cin + len(pool_scales) * c, c, 3, padding=1, norm=self.norm
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        sem = cfg.MODEL.KNET.SEM
        ret = cls._base_config(cfg, input_shape, sem.IN_FEATURES[-1:])
        ret["pool_scales"] = tuple(sem.PSP_POOL_SCALES)
        return ret

    def forward_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.in_features[0]]
        return self.bottleneck(torch.cat([x, *self.psp_modules(x)], dim=1))


@SEM_SEG_HEADS_REGISTRY.register()
class ASPPHead(BaseDecodeHead):
    """DeepLabV3 head (mmseg ``ASPPHead``).

    ``bottleneck(cat[resize(image_pool(x)), aspp_0(x), ..., aspp_n(x)])`` with
    ``image_pool`` = global average pool + 1x1 ConvModule, ``aspp_i`` a 1x1 ConvModule if
    dilation 1 else a 3x3 ConvModule with that dilation (padding = dilation), bottleneck 3x3.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        dilations: Sequence[int] = (1, 12, 24, 36),
        **kwargs,
    ):
        """
        Args:
            input_shape: exactly one feature.
            dilations: one ASPP branch per entry (1 = 1x1 conv).
            **kwargs: see :class:`BaseDecodeHead`.
        """
        assert len(input_shape) == 1, "ASPPHead takes a single feature map"
        super().__init__(input_shape, **kwargs)
        cin, c = self.in_channels[0], self.channels
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), conv_norm_relu(cin, c, 1, norm=self.norm)
        )
        self.aspp_modules = nn.ModuleList(
            conv_norm_relu(
                cin,
                c,
                1 if d == 1 else 3,
                padding=0 if d == 1 else d,
                dilation=d,
                norm=self.norm,
            )
            for d in dilations
        )
        self.bottleneck = conv_norm_relu(
            (len(dilations) + 1) * c, c, 3, padding=1, norm=self.norm
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        sem = cfg.MODEL.KNET.SEM
        ret = cls._base_config(cfg, input_shape, sem.IN_FEATURES[-1:])
        ret["dilations"] = tuple(sem.ASPP_DILATIONS)
        return ret

    def forward_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.in_features[0]]
        outs = [bilinear_resize(self.image_pool(x), x.shape[-2:])]
        outs.extend(m(x) for m in self.aspp_modules)
        return self.bottleneck(torch.cat(outs, dim=1))
