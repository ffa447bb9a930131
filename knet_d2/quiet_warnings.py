"""Filters for third-party warnings that knet_d2 cannot fix (installed by ``import knet_d2``).

Only the warnings named here are hidden, each for the reason given; everything else, including
any warning about knet_d2's own code, is shown as usual. This module imports nothing heavy, so
``import knet_d2`` can install the filters before Detectron2 (and with it fvcore) is imported.
"""
from __future__ import annotations

import warnings

__all__ = ["THIRD_PARTY_WARNINGS", "filter_third_party_warnings"]

#: (category, message regex, why it is hidden)
THIRD_PARTY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        r"`torch\.jit\.script` is deprecated",
        # fvcore/nn/focal_loss.py scripts two focal-loss functions at import time; every
        # Detectron2 import chain (detectron2.layers -> fvcore.nn) triggers it, so it was
        # printed twice on every command. knet_d2 never calls torch.jit.script.
        "fvcore.nn.focal_loss calls torch.jit.script at import",
    ),
)


def filter_third_party_warnings() -> None:
    """Install an ``ignore`` filter for each entry of :data:`THIRD_PARTY_WARNINGS` (idempotent:
    ``warnings.filterwarnings`` does not add an identical filter twice)."""
    for category, message, _why in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
