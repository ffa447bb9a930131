"""What the official K-Net checkpoints of both layouts share (docs/reference.md §4.3).

Recognising a release (:func:`official_layout`, :func:`detect_task`, :func:`describe_backbone`),
the :class:`ConversionResult` the converters fill, and the renames of the modules both layouts
contain: the ``KernelUpdateHead`` (:func:`rename_kernel_update_head_key`) and mmcv's
``ConvModule`` (:func:`rename_conv_module_key`). The key mapping of each layout is described in
``knet_converter``.
"""
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..modeling.backbone.resnet_depths import BOTTLENECK_MIN_DEPTH, RESNET_BLOCKS_PER_STAGE

__all__ = [
    "TASKS",
    "ConversionResult",
    "backbone_kind",
    "describe_backbone",
    "detect_task",
    "official_layout",
    "rename_by_rules",
    "rename_conv_module_key",
    "rename_kernel_update_head_key",
    "tensor_items",
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


def official_layout(state_dict: Mapping[str, Any]) -> Optional[str]:
    """"mmdet" (``rpn_head.*`` / ``roi_head.*`` keys) or "mmseg" (``decode_head.*`` /
    ``auxiliary_head.*``) when ``state_dict`` (unwrapped) has the top-level modules of an
    official K-Net release, else None. knet_d2 names never start with these modules."""
    if any(k.startswith(("decode_head.", "auxiliary_head.")) for k in state_dict):
        return "mmseg"
    if any(k.startswith(("roi_head.", "rpn_head.")) for k in state_dict):
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
    layout = official_layout(state_dict)
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


def backbone_kind(sd: Mapping[str, Any]) -> str:
    """"swin", "resnet_v1c" (mmseg), "resnet" (mmdet) or "unknown", from the backbone keys."""
    if "backbone.patch_embed.projection.weight" in sd:
        return "swin"
    if "backbone.stem.0.weight" in sd:
        return "resnet_v1c"
    if "backbone.conv1.weight" in sd:
        return "resnet"
    return "unknown"


# (blocks per stage, bottleneck blocks) -> depth
_RESNET_DEPTHS = {
    (blocks, depth >= BOTTLENECK_MIN_DEPTH): depth
    for depth, blocks in RESNET_BLOCKS_PER_STAGE.items()
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
    kind = backbone_kind(state_dict)
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


def rename_by_rules(
    rules: Tuple[Tuple["re.Pattern[str]", str], ...], key: str
) -> Optional[str]:
    """``key`` rewritten by the first ``(pattern, replacement)`` rule it matches, or None."""
    for pattern, repl in rules:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def rename_by_match(
    rules: Sequence[Tuple["re.Pattern[str]", Callable[["re.Match[str]"], Optional[str]]]],
    key: str,
) -> Optional[str]:
    """``key`` renamed by the function of the first pattern it matches (given the match), or
    None when no pattern matches or that function has no name for it."""
    for pattern, rename in rules:
        m = pattern.match(key)
        if m:
            return rename(m)
    return None


def prefixed(prefix: str, name: Optional[str]) -> Optional[str]:
    """``prefix + name``, or None when ``name`` is None (a part without a renaming rule)."""
    return None if name is None else prefix + name


def rename_kernel_update_head_key(key: str) -> Optional[str]:
    """Key of one official ``KernelUpdateHead`` (relative to it) -> knet_d2's, or None.

    >>> rename_kernel_update_head_key("attention.attn.in_proj_weight")
    'attention.in_proj_weight'
    >>> rename_kernel_update_head_key("feat_transform.conv.bias")
    'feat_transform.bias'
    """
    return rename_by_rules(_UPDATE_HEAD_RULES, key)


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


def tensor_items(res: ConversionResult, sd: Mapping[str, Any]) -> List[Tuple[str, torch.Tensor]]:
    """The (key, tensor) items of ``sd``; other values are marked unconverted in ``res``."""
    items = []
    for k, v in sd.items():
        if torch.is_tensor(v):
            items.append((k, v))
        else:
            res.unconverted[k] = f"value is a {type(v).__name__}, not a tensor"
    return items


BackboneItemConverter = Callable[[ConversionResult, str, str, torch.Tensor], None]


@dataclass(frozen=True)
class OfficialLayout:
    """One official K-Net state-dict layout (mmdet or mmseg) and the walk that converts it.

    Every tensor outside ``backbone.`` is renamed by ``rename_head_key`` (None: no rule). Each
    ``backbone.*`` tensor goes to ``backbone_converters[backbone_kind(state_dict)](res, key,
    key_without_prefix, value)``; a backbone kind without a converter leaves the backbone
    unconverted ("unknown backbone (expected <expected_backbones>)").
    """

    name: str
    rename_head_key: Callable[[str], Optional[str]]
    backbone_converters: Mapping[str, BackboneItemConverter]
    expected_backbones: str

    def convert(self, state_dict: Mapping[str, Any]) -> ConversionResult:
        """The knet_d2 names and tensors of ``state_dict`` (an official checkpoint's)."""
        res = ConversionResult(source=f"{self.name} K-Net, {describe_backbone(state_dict)}")
        convert_backbone_item = self.backbone_converters.get(backbone_kind(state_dict))
        for key, value in tensor_items(res, state_dict):
            if not key.startswith("backbone."):
                res.put(key, self.rename_head_key(key), value)
            elif convert_backbone_item is None:
                res.unconverted[key] = f"unknown backbone (expected {self.expected_backbones})"
            else:
                convert_backbone_item(res, key, key[len("backbone."):], value)
        return res
