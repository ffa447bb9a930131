"""Checkpoint conversion for knet_d2: official K-Net (mmdet / mmseg) -> Detectron2 state dicts.

The functions here are pure (state dict in, state dict out); ``tools/convert_knet_to_d2.py``
is the command-line front end that reads and writes files.
"""
from . import knet_converter
from .knet_converter import *  # noqa: F403  (its __all__ is this package's API)

__all__ = list(knet_converter.__all__)
