"""Checkpoint conversion for knet_d2: official K-Net (mmdet / mmseg) -> Detectron2 state dicts.

The functions here are pure (state dict in, state dict out). :func:`convert_if_official` is what
:class:`knet_d2.engine.KNetCheckpointer` runs on every file it loads (official releases are
converted on load); ``tools/convert_knet_to_d2.py`` is the command-line front end that writes a
converted file.
"""
from . import knet_converter, official_loading
from .knet_converter import *  # noqa: F403  (its __all__ is this package's API)
from .official_loading import *  # noqa: F403

__all__ = list(knet_converter.__all__) + list(official_loading.__all__)
