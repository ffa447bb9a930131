"""File handling shared by the ImageNet-weight converters in ``tools/convert-*-to-d2.py``.

Inputs are read with ``torch.load(weights_only=True)`` (no code runs); outputs are Detectron2
pickles ``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}``
written atomically (temporary file + rename), and an existing output is never replaced.
"""
from __future__ import annotations

import os
import pickle
from typing import Dict, Mapping, Optional

import torch

__all__ = ["ConversionError", "check_paths", "load_state_dict_file", "write_d2_pickle"]


class ConversionError(ValueError):
    """A converter input that cannot be converted; the message names the file."""


def check_paths(src: str, dst: str) -> Optional[str]:
    """The message to print (exit status 2) when ``src`` is missing or ``dst`` exists, else None."""
    if not os.path.isfile(src):
        return f"input checkpoint not found: {src}"
    if os.path.exists(dst):
        return f"refusing to overwrite existing file: {dst}"
    return None


def load_state_dict_file(src: str) -> Dict[str, torch.Tensor]:
    """The tensors of checkpoint ``src``: a bare state dict or one under ``state_dict``/``model``.

    Raises:
        ConversionError: naming ``src``, when it is not a readable torch file of tensors.
    """
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ConversionError(f"{src}: not a readable torch checkpoint ({e})") from e
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConversionError(
            f"{src}: expected a state dict of tensors, got {type(obj).__name__}"
        )
    return obj


def write_d2_pickle(tensors: Mapping[str, torch.Tensor], dst: str, author: str) -> None:
    """Write ``tensors`` as a D2 pickle (matching heuristics on) to ``dst``, atomically.

    Raises:
        FileExistsError: when ``dst`` exists (never overwritten).
    """
    if os.path.exists(dst):
        raise FileExistsError(f"refusing to overwrite existing file: {dst}")
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    payload = {
        "model": {k: v.detach().cpu().numpy() for k, v in tensors.items()},
        "__author__": author,
        "matching_heuristics": True,
    }
    tmp = f"{dst}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
