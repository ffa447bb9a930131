"""mmdet-layout K-Net releases (instance and panoptic) -> the ``KNet`` meta-architecture.

The key mapping is in the docstring of ``knet_converter``. The ResNet backbone goes through
``torchvision_resnet`` (mmdet keeps torchvision's names), Swin through ``mmdet_swin``. The BN
step counters of the backbone are dropped on purpose: the detection configs use ``FrozenBN``,
which has none.
"""
import re
from functools import partial
from typing import Optional

import torch

from .knet_official import (
    ConversionResult,
    OfficialLayout,
    prefixed,
    rename_by_match,
    rename_kernel_update_head_key,
)
from .mmdet_swin import convert_mmdet_swin_item
from .torchvision_resnet import rename_torchvision_resnet_key

__all__ = ["MMDET_LAYOUT", "convert_detection_state_dict"]


_NECK_RE = re.compile(r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$")
_CONV_MODULE = r"(?:conv|gn|bn)\.(?:weight|bias|running_mean|running_var)"
_LOC_FPN_RE = re.compile(
    r"^rpn_head\.localization_fpn\.((?:convs_all_levels\.\d+\.conv\d+|conv_pred|aux_convs\.\d+)"
    rf"\.{_CONV_MODULE})$"
)
_KERNEL_HEAD_RE = re.compile(
    r"^rpn_head\.(init_kernels\.weight|conv_seg\.(?:weight|bias)|"
    rf"(?:loc_convs|seg_convs)\.\d+\.{_CONV_MODULE})$"
)
_DET_UPDATE_RE = re.compile(r"^roi_head\.mask_head\.(\d+)\.(.+)$")


def _neck_key(m: "re.Match[str]") -> str:
    kind = "lateral" if m.group(1) == "lateral_convs" else "output"
    return f"backbone.fpn_{kind}{int(m.group(2)) + 2}.{m.group(3)}"


_DET_HEAD_RULES = (
    (_NECK_RE, _neck_key),
    (_LOC_FPN_RE, lambda m: "neck." + m.group(1)),
    (_KERNEL_HEAD_RE, lambda m: "kernel_head." + m.group(1)),
    (_DET_UPDATE_RE, lambda m: prefixed(
        f"update_heads.{m.group(1)}.", rename_kernel_update_head_key(m.group(2)))),
)


def _rename_det_head_key(key: str) -> Optional[str]:
    return rename_by_match(_DET_HEAD_RULES, key)


def _convert_resnet_item(res: ConversionResult, key: str, rest: str, value: torch.Tensor) -> None:
    """One tensor of the torchvision-style ResNet (``rest``: its name without ``backbone.``)."""
    if rest.endswith(".num_batches_tracked"):
        res.ignored[key] = "BN step counter; the FrozenBN backbone has none"
        return
    res.put(key, prefixed("backbone.bottom_up.", rename_torchvision_resnet_key(rest)), value)


MMDET_LAYOUT = OfficialLayout(
    "mmdet", _rename_det_head_key,
    {"swin": partial(convert_mmdet_swin_item, prefix="backbone.bottom_up."),
     "resnet": _convert_resnet_item},
    "an mmdet ResNet or Swin",
)
# official mmdet K-Net state dict -> ConversionResult (knet_d2 names)
convert_detection_state_dict = MMDET_LAYOUT.convert
