"""torchvision (and mmdet) ResNet checkpoints -> Detectron2 ResNet names.

Used for the ImageNet weights of the COCO configs (``tools/convert-torchvision-to-d2.py``) and
for the ResNet backbone of the official mmdet K-Net releases (``knet_mmdet``). Renames:
``conv1``/``bn1`` -> ``stem.conv1``/``stem.conv1.norm``, ``layer{i}`` -> ``res{i+1}``,
``bn{k}`` -> ``conv{k}.norm``, ``downsample.0``/``.1`` -> ``shortcut``/``shortcut.norm``; mmdet
DCN ``conv2.conv_offset`` -> ``conv2_offset`` (same channel layout, see
``knet_d2/modeling/backbone/deform_resnet.py``).
"""
import re
from typing import Dict, List, Optional, Tuple

import torch

__all__ = ["convert_torchvision_resnet_state_dict", "rename_torchvision_resnet_key"]

_LAYER_RE = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")
_BLOCK_RENAMES = (
    (re.compile(r"^bn([123])\.(.+)$"), r"conv\1.norm.\2"),
    (re.compile(r"^downsample\.0\.(.+)$"), r"shortcut.\1"),
    (re.compile(r"^downsample\.1\.(.+)$"), r"shortcut.norm.\1"),
    (re.compile(r"^conv2\.conv_offset\.(weight|bias)$"), r"conv2_offset.\1"),  # mmdet DCN
    (re.compile(r"^conv2_offset\.(weight|bias)$"), r"conv2_offset.\1"),  # mmdet v1 DCN
    (re.compile(r"^conv([123])\.weight$"), r"conv\1.weight"),
)


def rename_torchvision_resnet_key(key: str) -> Optional[str]:
    """Map a torchvision (or mmdet) ResNet state-dict key to D2's ResNet name.

    ``conv1.weight`` / ``bn1.*`` -> ``stem.conv1.weight`` / ``stem.conv1.norm.*``;
    ``layer{i}.{j}.conv{k}.weight`` -> ``res{i+1}.{j}.conv{k}.weight``; ``bn{k}.*`` ->
    ``conv{k}.norm.*``; ``downsample.0.*`` / ``downsample.1.*`` -> ``shortcut.*`` /
    ``shortcut.norm.*``; mmdet DCN ``conv2.conv_offset.*`` (and mmdet v1 ``conv2_offset.*``) ->
    ``conv2_offset.*`` (same channel layout, see the module docstring).

    Returns:
        The D2 name, or None for keys that are not part of the ResNet body (``fc.*``, BN
        ``num_batches_tracked`` counters, anything unknown).
    """
    if key.endswith(".num_batches_tracked"):
        return None
    if key == "conv1.weight":
        return "stem.conv1.weight"
    m = re.match(r"^bn1\.(weight|bias|running_mean|running_var)$", key)
    if m:
        return f"stem.conv1.norm.{m.group(1)}"
    m = _LAYER_RE.match(key)
    if not m:
        return None
    stage, block, rest = m.groups()
    for pattern, repl in _BLOCK_RENAMES:
        if pattern.match(rest):
            return f"res{int(stage) + 1}.{block}.{pattern.sub(repl, rest)}"
    return None


def convert_torchvision_resnet_state_dict(
    state_dict: Dict[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """torchvision ResNet state dict -> (D2-named tensors, sorted unused source keys).

    Raises:
        ValueError: the input is not a ResNet state dict (no ``conv1.weight`` / ``layer1.*``).
    """
    if "conv1.weight" not in state_dict or not any(k.startswith("layer1.") for k in state_dict):
        sample = ", ".join(sorted(state_dict)[:5]) or "no keys"
        raise ValueError(
            "not a torchvision ResNet state dict (needs conv1.weight and layer1.* keys); "
            f"found {len(state_dict)} keys such as: {sample}"
        )
    converted, unused = {}, []
    for key, value in state_dict.items():
        new = rename_torchvision_resnet_key(key)
        if new is None:
            unused.append(key)
        else:
            converted[new] = value
    return converted, sorted(unused)
