"""mmseg-layout K-Net releases (ADE20K semantic) -> D2's ``SemanticSegmentor``.

The key mapping is in the docstring of ``knet_converter``. The ResNetV1c backbone goes through
``mmcv_resnet_v1c``, Swin through ``mmdet_swin``; the decode and auxiliary heads are mmcv
``ConvModule`` stacks (:func:`~.knet_official.rename_conv_module_key`).
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
    rename_conv_module_key,
    rename_kernel_update_head_key,
)
from .mmcv_resnet_v1c import convert_mmcv_resnet_v1c_state_dict
from .mmdet_swin import convert_mmdet_swin_item

__all__ = ["MMSEG_LAYOUT", "convert_semantic_state_dict"]


_SEM_GEN_RE = re.compile(r"^decode_head\.kernel_generate_head\.(.+)$")
_SEM_UPDATE_RE = re.compile(r"^decode_head\.kernel_update_head\.(\d+)\.(.+)$")
_SEM_AUX_RE = re.compile(r"^auxiliary_head\.(.+)$")


_SEM_HEAD_RULES = (
    (_SEM_GEN_RE, lambda m: prefixed(
        "sem_seg_head.kernel_generate_head.", rename_conv_module_key(m.group(1)))),
    (_SEM_UPDATE_RE, lambda m: prefixed(
        f"sem_seg_head.kernel_update_head.{m.group(1)}.",
        rename_kernel_update_head_key(m.group(2)))),
    (_SEM_AUX_RE, lambda m: prefixed(
        "sem_seg_head.auxiliary_head.", rename_conv_module_key(m.group(1)))),
)


def _rename_sem_head_key(key: str) -> Optional[str]:
    return rename_by_match(_SEM_HEAD_RULES, key)


def _convert_resnet_v1c_item(
    res: ConversionResult, key: str, rest: str, value: torch.Tensor
) -> None:
    """One tensor of the mmseg ResNetV1c (``rest``: its name without ``backbone.``)."""
    try:
        renamed = convert_mmcv_resnet_v1c_state_dict({rest: value})
    except KeyError:
        renamed = {}
    if len(renamed) == 1:
        (new, value), = renamed.items()
        res.put(key, "backbone." + new, value)
    else:
        res.unconverted[key] = "not a ResNetV1c backbone weight"


MMSEG_LAYOUT = OfficialLayout(
    "mmseg", _rename_sem_head_key,
    {"swin": partial(convert_mmdet_swin_item, prefix="backbone."),
     "resnet_v1c": _convert_resnet_v1c_item},
    "mmseg ResNetV1c or Swin",
)
# official mmseg K-Net state dict -> ConversionResult (knet_d2 names)
convert_semantic_state_dict = MMSEG_LAYOUT.convert
