#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet checkpoint into a Detectron2 ``.pkl`` for knet_d2.

    python tools/convert-torchvision-to-d2.py resnet101-63fe2227.pth pretrained/R-101.pkl

Input: a torchvision ResNet state dict (``torchvision.models.resnet{18,34,50,101,152}``
weights, e.g. https://download.pytorch.org/models/resnet101-63fe2227.pth), or a dict holding one
under ``"state_dict"`` / ``"model"``. Output: ``{"model": {D2 name: numpy array},
"__author__": "torchvision", "matching_heuristics": True}``; ``DetectionCheckpointer`` then
maps ``res2.0.conv1.weight`` onto ``backbone.bottom_up.res2.0.conv1.weight`` by suffix.

Renames (``knet_d2.modeling.backbone.deform_resnet.rename_torchvision_resnet_key``):
``conv1``/``bn1`` -> ``stem.conv1``/``stem.conv1.norm``, ``layer{i}`` -> ``res{i+1}``,
``bn{k}`` -> ``conv{k}.norm``, ``downsample.0``/``.1`` -> ``shortcut``/``shortcut.norm``.
``fc.*`` and BN ``num_batches_tracked`` are dropped and listed as unused.

The weights expect the torchvision preprocessing and the "pytorch" ResNet style, i.e. a config
with (as configs/coco/Base-KNet-R50.yaml has)::

    MODEL.PIXEL_MEAN [123.675, 116.28, 103.53]
    MODEL.PIXEL_STD [58.395, 57.12, 57.375]
    MODEL.RESNETS.STRIDE_IN_1X1 False   # stride in the 3x3 conv
    INPUT.FORMAT "RGB"

An existing output file is never overwritten.
"""
import os
import sys
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from knet_d2.checkpoint.io import check_paths, load_state_dict_file, write_d2_pickle  # noqa: E402
from knet_d2.modeling.backbone.deform_resnet import rename_torchvision_resnet_key  # noqa: E402


def convert(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, dst = argv
    problem = check_paths(src, dst)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        converted, unused = convert(load_state_dict_file(src))
    except ValueError as e:
        msg = str(e)
        print(msg if msg.startswith(src) else f"{src}: {msg}", file=sys.stderr)
        return 1
    if unused:
        print(f"unused keys ({len(unused)}): {', '.join(unused)}")
    write_d2_pickle(converted, dst, author="torchvision")
    print(f"wrote {len(converted)} tensors to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
