"""File-to-file conversions behind the ``tools/convert*.py`` scripts.

Each function reads one checkpoint, converts it with a layout module of this package, prints
what it did (stdout) or why it could not (stderr, naming the file) and writes a new file through
:func:`~.io.atomic_write` (an existing output is never replaced). It returns the exit status of
the script: 0 written, 1 the input cannot be converted, 2 bad paths or an unreadable input
(:func:`convert_knet_file`; the ImageNet converters report an unreadable input with 1).
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
from collections import Counter
from typing import Any, Callable, Dict, List, Optional

import torch

from .io import check_paths, save_new_torch_file, write_d2_pickle
from .knet_converter import convert_knet_state_dict
from .knet_official import describe_backbone, detect_task
from .loading import load_state_dict_file, unwrap_state_dict
from .mmcv_resnet_v1c import convert_mmcv_resnet_v1c_state_dict
from .swin import convert_swin_state_dict
from .torchvision_resnet import convert_torchvision_resnet_state_dict

__all__ = [
    "convert_knet_file",
    "convert_mmcv_resnet_v1c_file",
    "convert_swin_file",
    "convert_torchvision_file",
    "load_checkpoint_for_conversion",
    "run_imagenet_converter",
]


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _write_pickle(converted: Dict[str, torch.Tensor], dst: str, author: str) -> int:
    write_d2_pickle(converted, dst, author=author)
    print(f"wrote {len(converted)} tensors to {dst}")
    return 0


def _convert_imagenet_file(
    src: str,
    dst: str,
    author: str,
    convert: Callable[[Dict[str, Any]], Dict[str, torch.Tensor]],
    error_prefix: Optional[str],
) -> int:
    """The shared steps of the ImageNet converters: check the paths, load ``src``, ``convert``
    it (a ValueError is the input's problem: printed with ``src`` and ``error_prefix`` in front
    unless the message names ``src`` already, or as is if ``error_prefix`` is None), write."""
    problem = check_paths(src, dst)
    if problem:
        _err(problem)
        return 2
    try:
        converted = convert(load_state_dict_file(src))
    except ValueError as e:
        msg = str(e)
        if error_prefix is not None and not msg.startswith(src):
            msg = f"{src}: {error_prefix}{msg}"
        _err(msg)
        return 1
    return _write_pickle(converted, dst, author)


def convert_torchvision_file(src: str, dst: str) -> int:
    """torchvision ImageNet ResNet ``src`` -> D2 pickle ``dst`` (author "torchvision");
    the unused source keys (``fc.*``, BN step counters) are listed."""

    def convert(state_dict: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        converted, unused = convert_torchvision_resnet_state_dict(state_dict)
        if unused:
            print(f"unused keys ({len(unused)}): {', '.join(unused)}")
        return converted

    return _convert_imagenet_file(src, dst, "torchvision", convert, error_prefix="")


def convert_mmcv_resnet_v1c_file(src: str, dst: str) -> int:
    """mmcv ImageNet ResNetV1c ``src`` -> D2 pickle ``dst`` (author "mmcv-resnet-v1c")."""

    def convert(state_dict: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        converted = convert_mmcv_resnet_v1c_state_dict(state_dict)
        if not converted:
            raise ValueError(f"{src}: no ResNetV1c backbone weights found")
        return converted

    if not check_paths(src, dst):
        print(f"{src}: loading with torch.load(weights_only=True)")
    return _convert_imagenet_file(src, dst, "mmcv-resnet-v1c", convert, error_prefix=None)


def convert_swin_file(src: str, dst: str) -> int:
    """Official Swin ImageNet ``src`` -> D2 pickle ``dst`` (author "third_party"); the dropped
    keys (classifier, final norm, attention masks) are listed."""

    def convert(state_dict: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        converted, dropped = convert_swin_state_dict(state_dict)
        if dropped:
            heads = [k for k in dropped if k.startswith("head.")]
            others = [k for k in dropped if not k.startswith("head.")]
            print(f"dropped {len(dropped)} keys not used by the backbone: classifier {heads}"
                  + (f", other {others}" if others else ""))
        return converted

    return _convert_imagenet_file(
        src, dst, "third_party", convert, error_prefix="cannot convert: "
    )


def run_imagenet_converter(
    description: str,
    convert_file: Callable[[str, str], int],
    input_help: str,
    argv: Optional[List[str]] = None,
) -> int:
    """The command line of the ``tools/convert-*-to-d2.py`` scripts (``input output``)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="D2 weights to write (.pkl); must not exist")
    args = parser.parse_args(argv)
    return convert_file(args.input, args.output)


def load_checkpoint_for_conversion(path: str, allow_pickle: bool) -> Optional[Any]:
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


def convert_knet_file(
    src: str, dst: str, task: Optional[str] = None, allow_pickle: bool = False
) -> int:
    """Official K-Net release ``src`` -> knet_d2 checkpoint ``dst`` (a new ``.pth``).

    Args:
        task: "panoptic", "instance" or "semantic"; None = read from the keys (printed with
            the reason).
        allow_pickle: fully unpickle ``src`` (can run code) when ``weights_only`` refuses it.

    Returns:
        The exit status; with any unconvertible key nothing is written (1).
    """
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
    checkpoint = load_checkpoint_for_conversion(src, allow_pickle)
    if checkpoint is None:
        return 2
    try:
        state_dict = unwrap_state_dict(checkpoint)
        if task is not None:
            reason = "given with --task"
        else:
            task, reason = detect_task(state_dict)
        print(f"task: {task} ({reason})")
        print(f"backbone: {describe_backbone(state_dict)}")
        result = convert_knet_state_dict(state_dict, task)
    except ValueError as e:
        _err(f"{src}: {e}")
        return 1

    for why, n in Counter(result.ignored.values()).items():
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
    try:
        save_new_torch_file(payload, dst)
    except FileExistsError:  # created by another process meanwhile
        _err(f"refusing to overwrite existing file: {dst}")
        return 2
    print(f"converted {len(result.model)} tensors ({result.source}) -> {dst}")
    print(
        "evaluate with: python train_net.py --config-file <config from MODEL_ZOO.md> "
        f"--eval-only MODEL.WEIGHTS {dst}"
    )
    return 0
