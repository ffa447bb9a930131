#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet checkpoint into a Detectron2 ``.pkl`` for knet_d2.

    python tools/convert-torchvision-to-d2.py resnet101-63fe2227.pth pretrained/R-101.pkl

Input: a torchvision ResNet state dict (``torchvision.models.resnet{18,34,50,101,152}``
weights, e.g. https://download.pytorch.org/models/resnet101-63fe2227.pth), or a dict holding one
under ``"state_dict"`` / ``"model"``. Output: ``{"model": {D2 name: numpy array},
"__author__": "torchvision", "matching_heuristics": True}``; ``DetectionCheckpointer`` then
maps ``res2.0.conv1.weight`` onto ``backbone.bottom_up.res2.0.conv1.weight`` by suffix.

Renames: ``knet_d2/checkpoint/torchvision_resnet.py`` (``layer{i}`` -> ``res{i+1}``, ...).
``fc.*`` and BN ``num_batches_tracked`` are dropped and listed as unused.

The weights expect the torchvision preprocessing and the "pytorch" ResNet style, i.e. a config
with (as configs/coco/Base-KNet-R50.yaml has)::

    MODEL.PIXEL_MEAN [123.675, 116.28, 103.53]
    MODEL.PIXEL_STD [58.395, 57.12, 57.375]
    MODEL.RESNETS.STRIDE_IN_1X1 False   # stride in the 3x3 conv
    INPUT.FORMAT "RGB"

An existing output file is never overwritten.
"""
import sys
from typing import List, Optional

from knet_d2.checkpoint.convert_files import convert_torchvision_file, run_imagenet_converter


def main(argv: Optional[List[str]] = None) -> int:
    return run_imagenet_converter(
        __doc__, convert_torchvision_file, "torchvision ResNet checkpoint (.pth)", argv
    )


if __name__ == "__main__":
    sys.exit(main())
