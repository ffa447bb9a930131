"""Checkpoint formats of knet_d2: every layout conversion and all checkpoint file I/O.

* Layouts (pure: state dict in, state dict out): official K-Net releases, mmdet / mmseg
  (:mod:`.knet_converter` with :mod:`.knet_mmdet`, :mod:`.knet_mmseg`, :mod:`.knet_official`,
  :mod:`.mmdet_swin`); ImageNet backbones: torchvision ResNet (:mod:`.torchvision_resnet`),
  mmcv ResNetV1c (:mod:`.mmcv_resnet_v1c`), official Swin (:mod:`.swin`).
* :func:`convert_if_official` is what :class:`knet_d2.engine.KNetCheckpointer` runs on every file
  it loads (official releases are converted on load).
* I/O: :mod:`.io` (the atomic writer, converter outputs), :mod:`.loading` (code-free reading of
  ``.pth`` / ``.pkl`` files, state-dict unwrapping and prefix stripping).
* :mod:`.convert_files`: the file-to-file conversions behind ``tools/convert*.py``.
"""
from .io import TEMP_SUFFIX, atomic_write, check_paths, save_new_torch_file, write_d2_pickle
from .knet_converter import convert_knet_state_dict
from .knet_mmdet import convert_detection_state_dict
from .knet_mmseg import convert_semantic_state_dict
from .knet_official import (
    TASKS,
    ConversionResult,
    describe_backbone,
    detect_task,
    official_layout,
    rename_conv_module_key,
    rename_kernel_update_head_key,
)
from .loading import (
    ConversionError,
    CorruptCheckpointError,
    load_pickle_restricted,
    load_state_dict_file,
    strip_prefix,
    unwrap_state_dict,
)
from .mmcv_resnet_v1c import convert_mmcv_resnet_v1c_state_dict
from .mmdet_swin import rename_mmdet_swin_key, unfold_to_concat_order
from .official_loading import OfficialCheckpointError, convert_if_official
from .swin import convert_swin_state_dict
from .torchvision_resnet import convert_torchvision_resnet_state_dict, rename_torchvision_resnet_key

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
    "OfficialCheckpointError",
    "official_layout",
    "convert_if_official",
    "convert_mmcv_resnet_v1c_state_dict",
    "convert_swin_state_dict",
    "convert_torchvision_resnet_state_dict",
    "rename_torchvision_resnet_key",
    "TEMP_SUFFIX",
    "atomic_write",
    "check_paths",
    "save_new_torch_file",
    "write_d2_pickle",
    "ConversionError",
    "CorruptCheckpointError",
    "load_pickle_restricted",
    "load_state_dict_file",
    "strip_prefix",
]
