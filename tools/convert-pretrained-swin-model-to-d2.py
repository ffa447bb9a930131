#!/usr/bin/env python
"""Convert an official Swin Transformer ImageNet checkpoint for knet_d2.

    python tools/convert-pretrained-swin-model-to-d2.py swin_large_patch4_window7_224_22k.pth \
        swin_large_patch4_window7_224_22k.pkl

Input: a checkpoint of the official Swin repository (microsoft/Swin-Transformer releases,
e.g. https://github.com/SwinTransformer/storage/releases/download/v1.0.0/
swin_tiny_patch4_window7_224.pth): a dict with "model" (or "state_dict") or a bare state dict,
keys ``patch_embed.*``, ``layers.*``, ``norm.*``, ``head.*``. mmdet/mmseg-converted Swin
checkpoints (``stages.*``) are rejected.

Output: a D2 pickle ``{"model": {name: ndarray}, "__author__": "third_party",
"matching_heuristics": True}`` with the names of ``knet_d2.modeling.backbone.swin`` (unchanged
official names minus the classifier ``head.*``, the classification ``norm.*`` and
``attn_mask`` buffers; the dropped keys are printed). ``DetectionCheckpointer`` maps them onto
``backbone.bottom_up.*`` (Swin + FPN) or ``backbone.*`` (plain Swin) by suffix matching.
An existing output file is never overwritten.
"""
import sys
from typing import List, Optional

from knet_d2.checkpoint.convert_files import convert_swin_file, run_imagenet_converter


def main(argv: Optional[List[str]] = None) -> int:
    return run_imagenet_converter(
        __doc__, convert_swin_file, "official Swin checkpoint (.pth)", argv
    )


if __name__ == "__main__":
    sys.exit(main())
