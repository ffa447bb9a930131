"""mmseg-layout K-Net releases (ADE20K semantic) -> D2's ``SemanticSegmentor``.

The key mapping is in the docstring of ``knet_converter``. The ResNetV1c backbone goes through
``mmcv_resnet_v1c``, Swin through ``mmdet_swin``; the decode and auxiliary heads are mmcv
``ConvModule`` stacks (:func:`~.knet_official.rename_conv_module_key`).
"""
import re
from typing import Any, Mapping, Optional

import torch

from .knet_official import (
    ConversionResult,
    convert_official_state_dict,
    rename_conv_module_key,
    rename_kernel_update_head_key,
)
from .mmcv_resnet_v1c import convert_mmcv_resnet_v1c_state_dict
from .mmdet_swin import convert_mmdet_swin_item

__all__ = ["convert_semantic_state_dict"]


_SEM_GEN_RE = re.compile(r"^decode_head\.kernel_generate_head\.(.+)$")
_SEM_UPDATE_RE = re.compile(r"^decode_head\.kernel_update_head\.(\d+)\.(.+)$")
_SEM_AUX_RE = re.compile(r"^auxiliary_head\.(.+)$")


def _rename_sem_head_key(key: str) -> Optional[str]:
    m = _SEM_GEN_RE.match(key)
    if m:
        new = rename_conv_module_key(m.group(1))
        return None if new is None else "sem_seg_head.kernel_generate_head." + new
    m = _SEM_UPDATE_RE.match(key)
    if m:
        new = rename_kernel_update_head_key(m.group(2))
        return None if new is None else f"sem_seg_head.kernel_update_head.{m.group(1)}.{new}"
    m = _SEM_AUX_RE.match(key)
    if m:
        new = rename_conv_module_key(m.group(1))
        return None if new is None else "sem_seg_head.auxiliary_head." + new
    return None


def _convert_sem_backbone_item(
    res: ConversionResult, kind: str, key: str, rest: str, value: torch.Tensor
) -> None:
    """One mmseg backbone tensor (``rest``: its name without ``backbone.``)."""
    if kind == "swin":
        convert_mmdet_swin_item(res, key, rest, value, "backbone.")
    elif kind == "resnet_v1c":
        try:
            renamed = convert_mmcv_resnet_v1c_state_dict({rest: value})
        except KeyError:
            renamed = {}
        if len(renamed) == 1:
            (new, value), = renamed.items()
            res.put(key, "backbone." + new, value)
        else:
            res.unconverted[key] = "not a ResNetV1c backbone weight"
    else:
        res.unconverted[key] = "unknown backbone (expected mmseg ResNetV1c or Swin)"


def convert_semantic_state_dict(state_dict: Mapping[str, Any]) -> ConversionResult:
    """Convert an mmseg-layout K-Net (ADE20K) state dict for ``SemanticSegmentor``."""
    return convert_official_state_dict(
        state_dict, "mmseg", _rename_sem_head_key, _convert_sem_backbone_item
    )
