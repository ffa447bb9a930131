"""Official K-Net checkpoints -> knet_d2 state dicts (docs/reference.md §4.3).

Two source layouts are supported:

* **mmdet** -- the detection releases of ``ZwwWayne/K-Net`` (instance and panoptic; ResNet-50,
  ResNet-101, ResNet-101 + DCN, Swin-L): top-level ``backbone.``, ``neck.``, ``rpn_head.``,
  ``roi_head.mask_head.{s}.``. Target: the ``KNet`` meta-architecture.
* **mmseg** -- the ADE20K K-Net releases of ``open-mmlab/mmsegmentation`` (``configs/knet``;
  ResNetV1c-50-D8 with FCN / PSPNet / DeepLabV3 / UPerNet, Swin-T/L with UPerNet):
  ``backbone.``, ``decode_head.kernel_generate_head.``, ``decode_head.kernel_update_head.{s}.``,
  ``auxiliary_head.``. Target: D2's ``SemanticSegmentor`` with ``KNetSemSegHead``.

mmdet (official -> knet_d2)::

    backbone.conv1 / bn1                          backbone.bottom_up.stem.conv1 / .conv1.norm
    backbone.layer{k}.{j}.conv{i} / bn{i}         backbone.bottom_up.res{k+1}.{j}.conv{i} / .norm
    backbone.layer{k}.{j}.downsample.0 / .1       backbone.bottom_up.res{k+1}.{j}.shortcut / .norm
    backbone.layer{k}.{j}.conv2.conv_offset (DCN) backbone.bottom_up.res{k+1}.{j}.conv2_offset
    backbone.<mmdet Swin>                         backbone.bottom_up.<Swin, see below>
    neck.lateral_convs.{i}.conv                   backbone.fpn_lateral{i+2}
    neck.fpn_convs.{i}.conv                       backbone.fpn_output{i+2}
    rpn_head.localization_fpn.<rest>              neck.<rest>
    rpn_head.<rest>                               kernel_head.<rest>
    roi_head.mask_head.{s}.<rest>                 update_heads.{s}.<KernelUpdateHead rest>

mmseg (official -> knet_d2)::

    backbone.stem.{0,1,3,4,6,7}, layer*           backbone.stem.conv{1,2,3}{,.norm}, res*
                                                  (``convert_mmcv_resnet_v1c_state_dict``)
    backbone.<mmseg Swin>                         backbone.<Swin, see below>
    decode_head.kernel_generate_head.<rest>       sem_seg_head.kernel_generate_head.<CM rest>
    decode_head.kernel_update_head.{s}.<rest>     sem_seg_head.kernel_update_head.{s}.<KUH rest>
    auxiliary_head.<rest>                         sem_seg_head.auxiliary_head.<CM rest>

    (CM = ConvModule renames, KUH = KernelUpdateHead renames, see below)

* KernelUpdateHead rest (:func:`rename_kernel_update_head_key`): ``attention.attn.*`` ->
  ``attention.*`` (mmcv wraps ``nn.MultiheadAttention``), ``feat_transform.conv.*`` ->
  ``feat_transform.*`` (mmcv ConvModule); every other name is unchanged.
* ConvModule rest (:func:`rename_conv_module_key`): ``<m>.conv.{weight,bias}`` ->
  ``<m>.{weight,bias}``, ``<m>.bn.*`` -> ``<m>.norm.*`` (a ConvModule is one D2 ``Conv2d``
  here); ``conv_seg.*`` is unchanged.
* Swin (:mod:`.mmdet_swin`, mmdet and mmseg use the same names): ``stages.{i}`` ->
  ``layers.{i}``, ``attn.w_msa.*`` -> ``attn.*``, ``ffn.layers.*`` -> ``mlp.fc*``, and the
  patch-merging channels reordered to the official concat order (details there).

Dropped on purpose (``ConversionResult.ignored``): mmdet ``backbone.*.num_batches_tracked`` --
the detection configs use ``FrozenBN``, which has no step counter (a model built with BN
instead fills a missing counter with 0 when loading). mmseg checkpoints keep their
``num_batches_tracked`` (the semantic configs use SyncBN, which has it). Every other key without
a rule is reported in ``ConversionResult.unconverted``.

Class order: the official COCO classes are D2's contiguous ids (80 things, then 53 stuff, each
sorted by COCO id) and ADE20K's 150 classes are in the same order in mmseg and D2, so no
classifier row is permuted.
"""
from typing import Any, Mapping, Optional

from .knet_mmdet import convert_detection_state_dict
from .knet_mmseg import convert_semantic_state_dict
from .knet_official import TASKS, ConversionResult, detect_task, official_layout

__all__ = ["convert_knet_state_dict"]


def convert_knet_state_dict(
    state_dict: Mapping[str, Any], task: Optional[str] = None
) -> ConversionResult:
    """Convert an official K-Net state dict (see the module docstring) to knet_d2 names.

    Args:
        state_dict: official state dict (already unwrapped: :func:`~.loading.unwrap_state_dict`).
        task: "panoptic", "instance" or "semantic"; None = :func:`detect_task`.

    Returns:
        :class:`ConversionResult`; a non-empty ``unconverted`` means the conversion failed.

    Raises:
        ValueError: unknown task, no K-Net keys, or a task that does not fit the layout.
    """
    if task is None:
        task, _ = detect_task(state_dict)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    layout = official_layout(state_dict)
    if layout is None:
        raise ValueError(
            "no K-Net keys: neither rpn_head.* / roi_head.* (mmdet) nor decode_head.* (mmseg)"
        )
    expected = "mmseg" if task == "semantic" else "mmdet"
    if layout != expected:
        raise ValueError(
            f"task {task!r} needs an {expected}-layout checkpoint, but this one is "
            f"{layout}-layout ({'semantic' if layout == 'mmseg' else 'instance/panoptic'})"
        )
    if task == "semantic":
        res = convert_semantic_state_dict(state_dict)
    else:
        res = convert_detection_state_dict(state_dict)
    head, _, backbone = res.source.partition(", ")
    res.source = f"{head} {task}, {backbone}"
    return res
