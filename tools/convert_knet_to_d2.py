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
import os
import pickle
import sys
from typing import Any, List, Optional

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from knet_d2.checkpoint import (  # noqa: E402
    TASKS,
    convert_knet_state_dict,
    describe_backbone,
    detect_task,
    unwrap_state_dict,
)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def load_checkpoint(path: str, allow_pickle: bool) -> Optional[Any]:
    """``torch.load`` with ``weights_only=True``; full unpickling only if ``allow_pickle``.

    Returns None (after printing why) when the file cannot be loaded.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _err(
            f"{path}: cannot be loaded with torch.load(weights_only=True): {first}\n"
            f"{path}: the file is a general Python pickle; unpickling it can execute arbitrary "
            "code."
        )
        if not allow_pickle:
            _err("Re-run with --allow-pickle only if you trust where this file comes from.")
            return None
    except Exception as e:  # corrupt / truncated / not a torch file
        _err(f"{path}: cannot be read as a PyTorch checkpoint: {type(e).__name__}: {e}")
        return None
    _err(f"{path}: --allow-pickle given: loading with weights_only=False (full unpickling)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        _err(f"{path}: cannot be unpickled either: {type(e).__name__}: {e}")
        return None


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
    src, dst = args.input, args.output
    if not os.path.isfile(src):
        _err(f"input checkpoint not found: {src}")
        return 2
    if os.path.lexists(dst):
        _err(f"refusing to overwrite existing file: {dst}")
        return 2
    if dst.endswith((".pkl", ".pyth")):
        _err(f"{dst}: use a .pth name; Detectron2 reads .pkl / .pyth files as other formats")
        return 2

    print(f"{src}: loading with torch.load(weights_only=True)")
    checkpoint = load_checkpoint(src, args.allow_pickle)
    if checkpoint is None:
        return 2
    try:
        state_dict = unwrap_state_dict(checkpoint)
        if args.task is not None:
            task, reason = args.task, "given with --task"
        else:
            task, reason = detect_task(state_dict)
        print(f"task: {task} ({reason})")
        print(f"backbone: {describe_backbone(state_dict)}")
        result = convert_knet_state_dict(state_dict, task)
    except ValueError as e:
        _err(f"{src}: {e}")
        return 1

    if result.ignored:
        reasons = {}
        for why in result.ignored.values():
            reasons[why] = reasons.get(why, 0) + 1
        for why, n in reasons.items():
            print(f"ignored {n} key(s): {why}")
    if result.unconverted:
        for key, why in result.unconverted.items():
            _err(f"unconverted: {key}  ({why})")
        _err(f"{src}: {len(result.unconverted)} key(s) could not be converted; {dst} not written")
        return 1

    payload = {
        "model": result.model,
        "__author__": f"knet_d2 converter ({result.source})",
        "matching_heuristics": False,
    }
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    try:
        f = open(dst, "xb")  # "x": fails instead of overwriting a file created meanwhile
    except FileExistsError:
        _err(f"refusing to overwrite existing file: {dst}")
        return 2
    try:
        with f:
            torch.save(payload, f)
    except BaseException:
        os.remove(dst)  # our own partial file
        raise
    print(f"converted {len(result.model)} tensors ({result.source}) -> {dst}")
    print(
        "evaluate with: python train_net.py --config-file <config from MODEL_ZOO.md> "
        f"--eval-only MODEL.WEIGHTS {dst}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
