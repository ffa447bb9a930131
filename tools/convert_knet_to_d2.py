#!/usr/bin/env python
"""Convert an official K-Net checkpoint (mmdet or mmseg) into a knet_d2 / Detectron2 checkpoint.

    python tools/convert_knet_to_d2.py INPUT OUTPUT [--task panoptic|instance|semantic]
        [--allow-pickle]

INPUT: a released K-Net checkpoint -- ZwwWayne/K-Net (mmdet: instance / panoptic) or
mmsegmentation configs/knet (ADE20K semantic); see MODEL_ZOO.md. OUTPUT: a new ``.pth`` file
``{"model": {name: tensor}, "__author__": "knet_d2 converter (...)", "matching_heuristics":
False}`` that loads with ``torch.load(weights_only=True)``; pass it as ``MODEL.WEIGHTS`` with
the matching config. Key mapping: ``knet_d2/checkpoint/knet_converter.py``.

Not needed to run a release: ``MODEL.WEIGHTS`` accepts the released file or URL as it is (it is
converted when loaded, see MODEL_ZOO.md). This tool is for users who want a converted file.

* The task is read from the keys when ``--task`` is not given (mmseg layout -> semantic;
  mmdet layout -> 80 classes = instance, 133 = panoptic) and printed with the reason.
* INPUT is loaded with ``torch.load(weights_only=True)``. A file that needs full unpickling
  (which can execute arbitrary code) is only loaded with ``--allow-pickle``.
* OUTPUT is never overwritten. Every key that could not be converted is printed; if there is
  any, nothing is written and the exit status is 1 (2 for bad arguments / unreadable input).
"""
import argparse
import sys
from typing import List, Optional

from knet_d2.checkpoint import TASKS
from knet_d2.checkpoint.convert_files import convert_knet_file


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert an official K-Net checkpoint (mmdet / mmseg) for knet_d2.",
        epilog="Example: python tools/convert_knet_to_d2.py "
        "knet_s3_r50_fpn_1x_coco-panoptic_20211017_151750-395fbcba.pth "
        "pretrained/knet_r50_1x_coco_panoptic_d2.pth",
    )
    parser.add_argument("input", help="official checkpoint (.pth)")
    parser.add_argument("output", help="converted checkpoint to create (.pth; never overwritten)")
    parser.add_argument("--task", choices=TASKS, help="default: detected from the keys")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="if INPUT does not load with weights_only=True, fully unpickle it (can run code)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return convert_knet_file(args.input, args.output, args.task, args.allow_pickle)


if __name__ == "__main__":
    sys.exit(main())
