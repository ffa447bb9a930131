"""mmcv / mmseg ResNetV1c checkpoints -> the names of ``build_resnet_v1c_backbone``.

Used for mmcv's ImageNet weights (``open-mmlab://resnet50_v1c``,
``tools/convert-mmcv-resnet-v1c-to-d2.py``) and for the backbone of the official mmseg K-Net
releases (``knet_mmseg``). mmseg -> D2: ``stem.0/1`` -> ``stem.conv1``/``stem.conv1.norm``,
``stem.3/4`` -> ``stem.conv2*``, ``stem.6/7`` -> ``stem.conv3*``, ``layer{k}.{j}.conv{i}`` /
``bn{i}`` -> ``res{k+1}.{j}.conv{i}`` / ``.conv{i}.norm``, ``layer{k}.0.downsample.0/1`` ->
``res{k+1}.0.shortcut`` / ``.shortcut.norm``. The ImageNet converter saves the output for
``MODEL.WEIGHTS`` as a D2 ``.pkl`` with ``matching_heuristics`` on, so ``res2...`` keys map onto
``backbone.res2...``.
"""
import re
from typing import Dict

import torch

__all__ = ["convert_mmcv_resnet_v1c_state_dict"]

_STEM_MAP = {"0": "conv1", "1": "conv1.norm", "3": "conv2", "4": "conv2.norm", "6": "conv3",
             "7": "conv3.norm"}


def convert_mmcv_resnet_v1c_state_dict(
    state_dict: Dict[str, torch.Tensor],
) -> Dict[str, torch.Tensor]:
    """Rename an mmcv/mmseg ResNetV1c state dict to D2 ResNetV1c names (see the module doc).

    Accepts a raw state dict or a checkpoint with ``state_dict``; strips a ``backbone.``
    prefix; drops ``fc.*`` (ImageNet classifier) and anything that is not a backbone weight.
    """
    if "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    out = {}
    for key, value in state_dict.items():
        k = key[len("backbone."):] if key.startswith("backbone.") else key
        m = re.fullmatch(r"stem\.(\d+)\.(.+)", k)
        if m:
            if m.group(1) not in _STEM_MAP:
                raise KeyError(f"unexpected stem key {key}")
            out[f"stem.{_STEM_MAP[m.group(1)]}.{m.group(2)}"] = value
            continue
        m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", k)
        if not m:
            continue
        stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
        rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
        rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
        rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
        out[f"res{stage}.{block}.{rest}"] = value
    return out
