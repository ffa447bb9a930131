"""Checkpoint conversion for knet_d2: official K-Net (mmdet / mmseg) -> Detectron2 state dicts.

The functions here are pure (state dict in, state dict out); ``tools/convert_knet_to_d2.py``
is the command-line front end that reads and writes files.
"""
from .knet_converter import (
    TASKS,
    ConversionResult,
    convert_detection_state_dict,
    convert_knet_state_dict,
    convert_semantic_state_dict,
    describe_backbone,
    detect_task,
    rename_conv_module_key,
    rename_kernel_update_head_key,
    rename_mmdet_swin_key,
    unfold_to_concat_order,
    unwrap_state_dict,
)

__all__ = [
    "TASKS",
    "ConversionResult",
    "convert_detection_state_dict",
    "convert_knet_state_dict",
    "convert_semantic_state_dict",
    "describe_backbone",
    "detect_task",
    "rename_conv_module_key",
    "rename_kernel_update_head_key",
    "rename_mmdet_swin_key",
    "unfold_to_concat_order",
    "unwrap_state_dict",
]
