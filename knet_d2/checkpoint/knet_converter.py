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
* Swin (:func:`rename_mmdet_swin_key`, mmdet and mmseg use the same names):
  ``patch_embed.projection`` -> ``patch_embed.proj``, ``stages.{i}`` -> ``layers.{i}``,
  ``attn.w_msa.{qkv, proj, relative_position_bias_table, relative_position_index}`` ->
  ``attn.*``, ``ffn.layers.0.0`` -> ``mlp.fc1``, ``ffn.layers.1`` -> ``mlp.fc2``; ``norm1``,
  ``norm2``, ``patch_embed.norm``, ``norm{i}`` and ``downsample.{reduction, norm}`` keep their
  names, but the 4C input channels of ``downsample.reduction.weight`` (dim 1) and
  ``downsample.norm.*`` are reordered from ``nn.Unfold`` order to the official concat order
  (:func:`unfold_to_concat_order`). ``relative_position_index`` is copied after checking that it
  equals the official formula (mmdet computes it differently, with the same values).

Dropped on purpose (``ConversionResult.ignored``): mmdet ``backbone.*.num_batches_tracked`` --
the detection configs use ``FrozenBN``, which has no step counter (a model built with BN
instead fills a missing counter with 0 when loading). mmseg checkpoints keep their
``num_batches_tracked`` (the semantic configs use SyncBN, which has it). Every other key without
a rule is reported in ``ConversionResult.unconverted``.

Class order: the official COCO classes are D2's contiguous ids (80 things, then 53 stuff, each
sorted by COCO id) and ADE20K's 150 classes are in the same order in mmseg and D2, so no
classifier row is permuted.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..modeling.backbone.deform_resnet import rename_torchvision_resnet_key
from ..modeling.semantic.resnet_v1c import convert_mmcv_resnet_v1c_state_dict

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

TASKS = ("panoptic", "instance", "semantic")
# COCO: 80 thing classes (instance models) / 80 + 53 stuff (panoptic models).
_CLASSES_TO_TASK = {80: "instance", 133: "panoptic"}


@dataclass
class ConversionResult:
    """What :func:`convert_knet_state_dict` returns.

    Attributes:
        model: the converted state dict, knet_d2 name -> tensor.
        unconverted: source key -> why it could not be converted (no rule, not a tensor, a
            value that fails a check, two keys mapping to one name). Non-empty = failure.
        ignored: source key -> why it was dropped on purpose.
        source: one line describing the source, e.g. "mmdet K-Net panoptic, ResNet-101 + DCN".
    """

    model: Dict[str, torch.Tensor] = field(default_factory=dict)
    unconverted: Dict[str, str] = field(default_factory=dict)
    ignored: Dict[str, str] = field(default_factory=dict)
    source: str = ""

    def put(self, src_key: str, new_key: Optional[str], value: torch.Tensor) -> None:
        """Store ``value`` under ``new_key``; None or a clash marks ``src_key`` unconverted."""
        if new_key is None:
            self.unconverted[src_key] = "no conversion rule for this key"
        elif new_key in self.model:
            self.unconverted[src_key] = f"maps to {new_key}, which another key already produced"
        else:
            self.model[new_key] = value.contiguous()


# ------------------------------------------------------------------------------ inspection
def unwrap_state_dict(checkpoint: Any) -> Dict[str, Any]:
    """The state dict inside a loaded checkpoint.

    Accepts an mmcv checkpoint ``{"meta": ..., "state_dict": ..., ["optimizer": ...]}``, a
    ``{"model": ...}`` checkpoint or a bare state dict, and strips a leading ``module.`` (DDP)
    from every key that has one.

    Raises:
        ValueError: ``checkpoint`` is not a dict, or has a non-string key.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a dict, got a {type(checkpoint).__name__}")
    sd = checkpoint
    for name in ("state_dict", "model"):
        if isinstance(checkpoint.get(name), Mapping):
            sd = checkpoint[name]
            break
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str):
            raise ValueError(f"state dict key {k!r} is not a string")
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def _layout(sd: Mapping[str, Any]) -> Optional[str]:
    """'mmseg', 'mmdet' or None, from the top-level module names."""
    if any(k.startswith(("decode_head.", "auxiliary_head.")) for k in sd):
        return "mmseg"
    if any(k.startswith(("roi_head.", "rpn_head.")) for k in sd):
        return "mmdet"
    return None


def detect_task(state_dict: Mapping[str, Any]) -> Tuple[str, str]:
    """Guess the task of an official checkpoint from its keys.

    mmseg keys (``decode_head.*``) -> "semantic". mmdet K-Net instance and panoptic models have
    the same modules and differ only in their class count, read from the classifier of the
    first update stage (or ``rpn_head.conv_seg``): 80 (COCO things) -> "instance",
    133 (80 things + 53 stuff) -> "panoptic".

    Returns:
        (task, a sentence saying how it was decided).

    Raises:
        ValueError: the layout is unknown or the class count is not COCO's; pass the task.
    """
    layout = _layout(state_dict)
    if layout == "mmseg":
        return "semantic", "mmseg layout: the checkpoint has decode_head.* keys"
    if layout is None:
        raise ValueError(
            "cannot tell the task: no decode_head.* (mmseg K-Net) and no rpn_head.* / "
            "roi_head.* (mmdet K-Net) keys"
        )
    for key in ("roi_head.mask_head.0.fc_cls.weight", "rpn_head.conv_seg.weight"):
        value = state_dict.get(key)
        if torch.is_tensor(value):
            n = int(value.shape[0])
            if n in _CLASSES_TO_TASK:
                task = _CLASSES_TO_TASK[n]
                what = "80 COCO thing classes" if n == 80 else "80 COCO things + 53 stuff classes"
                return task, f"mmdet layout and {key} has {n} rows = {what}"
            raise ValueError(
                f"cannot tell instance from panoptic: {key} has {n} classes, not COCO's 80 "
                "(instance) or 133 (panoptic); pass the task explicitly"
            )
    raise ValueError("cannot tell instance from panoptic: no classifier weights found")


def _backbone_kind(sd: Mapping[str, Any]) -> str:
    if "backbone.patch_embed.projection.weight" in sd:
        return "swin"
    if "backbone.stem.0.weight" in sd:
        return "resnet_v1c"
    if "backbone.conv1.weight" in sd:
        return "resnet"
    return "unknown"


_RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}
_SWIN_NAMES = {(96, (2, 2, 6, 2)): "Swin-T", (96, (2, 2, 18, 2)): "Swin-S",
               (128, (2, 2, 18, 2)): "Swin-B", (192, (2, 2, 18, 2)): "Swin-L"}


def _count_blocks(sd: Mapping[str, Any], pattern: str) -> Tuple[int, ...]:
    """Number of distinct block ids per stage for keys matching ``pattern`` (stage, block)."""
    blocks: Dict[int, set] = {}
    rx = re.compile(pattern)
    for k in sd:
        m = rx.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return tuple(len(blocks[s]) for s in sorted(blocks))


def describe_backbone(state_dict: Mapping[str, Any]) -> str:
    """Human-readable backbone of an official checkpoint, e.g. "ResNet-101 + DCN (res3-res5)"."""
    kind = _backbone_kind(state_dict)
    if kind in ("resnet", "resnet_v1c"):
        blocks = _count_blocks(state_dict, r"^backbone\.layer(\d)\.(\d+)\.")
        bottleneck = any(re.match(r"^backbone\.layer\d\.\d+\.conv3\.", k) for k in state_dict)
        depth = _RESNET_DEPTHS.get((blocks, bottleneck), f"? (blocks {list(blocks)})")
        name = f"ResNet{'V1c' if kind == 'resnet_v1c' else ''}-{depth}"
        dcn = sorted({int(m.group(1)) + 1 for m in (
            re.match(r"^backbone\.layer(\d)\.\d+\.conv2\.conv_offset\.", k) for k in state_dict
        ) if m})
        return name + (f" + DCN (res{dcn[0]}-res{dcn[-1]})" if dcn else "")
    if kind == "swin":
        embed = int(state_dict["backbone.patch_embed.projection.weight"].shape[0])
        depths = _count_blocks(state_dict, r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.")
        return _SWIN_NAMES.get((embed, depths), f"Swin (embed {embed}, depths {list(depths)})")
    return "unknown backbone"


# ------------------------------------------------------------------------------ key renames
_UPDATE_HEAD_RULES = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^attention\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)$",
         r"attention.\1"),
        (r"^feat_transform\.conv\.(weight|bias)$", r"feat_transform.\1"),
        (r"^(attention_norm|ffn_norm|fc_cls|fc_mask)\.(weight|bias)$", r"\1.\2"),
        (r"^kernel_update_conv\.(dynamic_layer|input_layer|input_gate|update_gate|fc_layer|"
         r"norm_in|norm_out|input_norm_in|input_norm_out|fc_norm|gate_norm)\.(weight|bias)$",
         r"kernel_update_conv.\1.\2"),
        (r"^ffn\.layers\.(\d+(?:\.0)?)\.(weight|bias)$", r"ffn.layers.\1.\2"),
        (r"^(cls_fcs|mask_fcs)\.(\d+)\.(weight|bias)$", r"\1.\2.\3"),
    )
)


def _apply_rules(rules, key: str) -> Optional[str]:
    for pattern, repl in rules:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def rename_kernel_update_head_key(key: str) -> Optional[str]:
    """Key of one official ``KernelUpdateHead`` (relative to it) -> knet_d2's, or None.

    >>> rename_kernel_update_head_key("attention.attn.in_proj_weight")
    'attention.in_proj_weight'
    >>> rename_kernel_update_head_key("feat_transform.conv.bias")
    'feat_transform.bias'
    """
    return _apply_rules(_UPDATE_HEAD_RULES, key)


def rename_conv_module_key(key: str) -> Optional[str]:
    """Key inside an mmseg decode head (ConvModules) -> knet_d2's, or None.

    >>> rename_conv_module_key("psp_modules.0.1.conv.weight")
    'psp_modules.0.1.weight'
    >>> rename_conv_module_key("image_pool.1.bn.running_mean")
    'image_pool.1.norm.running_mean'
    """
    if re.fullmatch(r"conv_seg\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"(.+)\.conv\.(weight|bias)", key)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = re.fullmatch(r"(.+)\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
    if m:
        return f"{m.group(1)}.norm.{m.group(2)}"
    return None


_SWIN_RULES = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^patch_embed\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
        (r"^patch_embed\.norm\.(weight|bias)$", r"patch_embed.norm.\1"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$",
         r"layers.\1.blocks.\2.\3.\4"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(qkv|proj)\.(weight|bias)$",
         r"layers.\1.blocks.\2.attn.\3.\4"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\."
         r"(relative_position_bias_table|relative_position_index)$",
         r"layers.\1.blocks.\2.attn.\3"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$",
         r"layers.\1.blocks.\2.mlp.fc1.\3"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.(weight|bias)$",
         r"layers.\1.blocks.\2.mlp.fc2.\3"),
        (r"^stages\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$",
         r"layers.\1.downsample.\2"),
        (r"^norm(\d+)\.(weight|bias)$", r"norm\1.\2"),
    )
)


def rename_mmdet_swin_key(key: str) -> Optional[str]:
    """mmdet/mmseg Swin key (without ``backbone.``) -> official Swin name, or None.

    Only the name: the patch-merging weights also need :func:`unfold_to_concat_order`.

    >>> rename_mmdet_swin_key("stages.2.blocks.5.ffn.layers.0.0.weight")
    'layers.2.blocks.5.mlp.fc1.weight'
    """
    return _apply_rules(_SWIN_RULES, key)


# Official concat group g = dy + 2 * dx  ->  position of (dy, dx) in a 2x2 unfold patch.
_GROUP_TO_UNFOLD = torch.tensor([0, 2, 1, 3])


def unfold_to_concat_order(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder a 4C patch-merging axis from mmdet/mmseg to official Swin order.

    mmdet's ``PatchMerging`` gathers each 2x2 patch with ``nn.Unfold(2, stride=2)``, which
    orders the 4C values channel-major, then kernel row, then kernel column:
    ``u = 4 * c + 2 * dy + dx``. The official model concatenates the four sub-grids
    ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``, i.e. group-major with
    group ``g = dy + 2 * dx``: ``o = g * C + c``. Returns ``t`` with ``out[..., o, ...] =
    t[..., u(o), ...]`` along ``dim`` (the inverse of mmdet's ``swin_converter`` reordering).

    Args:
        t: e.g. ``reduction.weight`` (2C, 4C) with ``dim=1`` or ``norm.weight`` (4C,), ``dim=0``.
        dim: the 4C axis.
    """
    n = t.shape[dim]
    if n % 4:
        raise ValueError(f"patch-merging axis has {n} entries, not a multiple of 4")
    c = n // 4
    index = (torch.arange(c)[None, :] * 4 + _GROUP_TO_UNFOLD[:, None]).reshape(-1)
    return t.index_select(dim, index.to(t.device))


def _official_relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w): (y1 - y2 + w - 1) * (2w - 1) + (x1 - x2 + w - 1), tokens row-major."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :] + window - 1) * (2 * window - 1) + (
        xs[:, None] - xs[None, :] + window - 1
    )


def _convert_swin_item(
    res: ConversionResult, key: str, rest: str, value: torch.Tensor, prefix: str
) -> None:
    new = rename_mmdet_swin_key(rest)
    if new is None:
        res.unconverted[key] = "no conversion rule for this Swin key"
        return
    if new.endswith("downsample.reduction.weight"):
        value = unfold_to_concat_order(value, 1)
    elif new.endswith(("downsample.norm.weight", "downsample.norm.bias")):
        value = unfold_to_concat_order(value, 0)
    elif new.endswith("relative_position_index"):
        window = int(round(value.shape[0] ** 0.5))
        expected = _official_relative_position_index(window)
        if value.shape != expected.shape or not torch.equal(value.long().cpu(), expected):
            res.unconverted[key] = "relative_position_index differs from the official formula"
            return
    res.put(key, prefix + new, value)


# ------------------------------------------------------------------------------ converters
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


def _rename_det_head_key(key: str) -> Optional[str]:
    m = _NECK_RE.match(key)
    if m:
        kind = "lateral" if m.group(1) == "lateral_convs" else "output"
        return f"backbone.fpn_{kind}{int(m.group(2)) + 2}.{m.group(3)}"
    m = _LOC_FPN_RE.match(key)
    if m:
        return "neck." + m.group(1)
    m = _KERNEL_HEAD_RE.match(key)
    if m:
        return "kernel_head." + m.group(1)
    m = _DET_UPDATE_RE.match(key)
    if m:
        new = rename_kernel_update_head_key(m.group(2))
        return None if new is None else f"update_heads.{m.group(1)}.{new}"
    return None


def _tensor_items(res: ConversionResult, sd: Mapping[str, Any]) -> List[Tuple[str, torch.Tensor]]:
    items = []
    for k, v in sd.items():
        if torch.is_tensor(v):
            items.append((k, v))
        else:
            res.unconverted[k] = f"value is a {type(v).__name__}, not a tensor"
    return items


def convert_detection_state_dict(state_dict: Mapping[str, Any]) -> ConversionResult:
    """Convert an mmdet-layout K-Net (instance or panoptic) state dict for ``KNet``."""
    res = ConversionResult(source=f"mmdet K-Net, {describe_backbone(state_dict)}")
    kind = _backbone_kind(state_dict)
    for key, value in _tensor_items(res, state_dict):
        if not key.startswith("backbone."):
            res.put(key, _rename_det_head_key(key), value)
            continue
        rest = key[len("backbone."):]
        if kind == "swin":
            _convert_swin_item(res, key, rest, value, "backbone.bottom_up.")
        elif kind == "resnet":
            if rest.endswith(".num_batches_tracked"):
                res.ignored[key] = "BN step counter; the FrozenBN backbone has none"
                continue
            new = rename_torchvision_resnet_key(rest)
            res.put(key, None if new is None else "backbone.bottom_up." + new, value)
        else:
            res.unconverted[key] = "unknown backbone (expected an mmdet ResNet or Swin)"
    return res


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


def convert_semantic_state_dict(state_dict: Mapping[str, Any]) -> ConversionResult:
    """Convert an mmseg-layout K-Net (ADE20K) state dict for ``SemanticSegmentor``."""
    res = ConversionResult(source=f"mmseg K-Net, {describe_backbone(state_dict)}")
    kind = _backbone_kind(state_dict)
    for key, value in _tensor_items(res, state_dict):
        if not key.startswith("backbone."):
            res.put(key, _rename_sem_head_key(key), value)
            continue
        rest = key[len("backbone."):]
        if kind == "swin":
            _convert_swin_item(res, key, rest, value, "backbone.")
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
    return res


def convert_knet_state_dict(
    state_dict: Mapping[str, Any], task: Optional[str] = None
) -> ConversionResult:
    """Convert an official K-Net state dict (see the module docstring) to knet_d2 names.

    Args:
        state_dict: official state dict (already unwrapped, see :func:`unwrap_state_dict`).
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
    layout = _layout(state_dict)
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
