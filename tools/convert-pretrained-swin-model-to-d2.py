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
import argparse
import os
import pickle
import sys
from typing import List, Optional

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from knet_d2.modeling.backbone.swin import convert_swin_state_dict  # noqa: E402


def _state_dict(ckpt, src: str):
    if not isinstance(ckpt, dict):
        raise ValueError(f"{src}: expected a dict, got {type(ckpt).__name__}")
    for key in ("model", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help="official Swin checkpoint (.pth)")
    parser.add_argument("output", help="D2 weights to write (.pkl); must not exist")
    args = parser.parse_args(argv)
    src, dst = args.input, args.output
    if not os.path.isfile(src):
        print(f"input checkpoint not found: {src}", file=sys.stderr)
        return 2
    if os.path.exists(dst):
        print(f"refusing to overwrite existing file: {dst}", file=sys.stderr)
        return 2
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True)
        state_dict = _state_dict(ckpt, src)
        converted, dropped = convert_swin_state_dict(state_dict)
    except (ValueError, RuntimeError, pickle.UnpicklingError, EOFError) as e:
        print(f"{src}: cannot convert: {e}", file=sys.stderr)
        return 1
    if dropped:
        heads = [k for k in dropped if k.startswith("head.")]
        others = [k for k in dropped if not k.startswith("head.")]
        print(f"dropped {len(dropped)} keys not used by the backbone: classifier {heads}"
              + (f", other {others}" if others else ""))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(
            {"model": {k: v.detach().cpu().numpy() for k, v in converted.items()},
             "__author__": "third_party", "matching_heuristics": True},
            f,
        )
    os.replace(tmp, dst)
    print(f"wrote {len(converted)} tensors to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
