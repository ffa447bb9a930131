#!/usr/bin/env python
"""Convert mmcv's ImageNet ResNetV1c weights (``open-mmlab://resnet50_v1c``) for knet_d2.

    python tools/convert-mmcv-resnet-v1c-to-d2.py resnet50_v1c-2cccc1ad.pth \
        pretrained/resnet50_v1c_d2.pkl

The semantic ADE20K configs (``configs/ade20k/semantic-segmentation/``) name the output file in
``MODEL.WEIGHTS``. The weights are downloaded from OpenMMLab, e.g.
https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth . The output is a
D2 ``.pkl`` with ``matching_heuristics`` on, so ``res2...`` keys map onto
``backbone.res2...`` when loaded by DetectionCheckpointer. An existing output is never
overwritten.
"""
import sys
from typing import List, Optional

from knet_d2.checkpoint.convert_files import convert_mmcv_resnet_v1c_file, run_imagenet_converter


def main(argv: Optional[List[str]] = None) -> int:
    return run_imagenet_converter(
        __doc__, convert_mmcv_resnet_v1c_file, "mmcv ResNetV1c checkpoint (.pth)", argv
    )


if __name__ == "__main__":
    sys.exit(main())
