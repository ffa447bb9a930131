"""Recognise an official K-Net checkpoint when it is loaded and convert it in memory.

Detectron2's ``DetectionCheckpointer`` recognises Caffe2 / pycls files and converts them on load;
:func:`convert_if_official` is the K-Net equivalent, called by
:class:`knet_d2.engine.KNetCheckpointer` on every file it reads. A checkpoint as released by
ZwwWayne/K-Net (mmdet: ``{"meta", "state_dict", ...}`` with ``rpn_head.*`` / ``roi_head.*``
keys) or by mmsegmentation (``decode_head.*`` keys) is converted with
:func:`~knet_d2.checkpoint.knet_converter.convert_knet_state_dict`; anything else (checkpoints
written by knet_d2 or Detectron2, ImageNet backbones) is returned unchanged.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Dict, Mapping, Optional

from .knet_mmdet import convert_detection_state_dict
from .knet_mmseg import convert_semantic_state_dict
from .knet_official import detect_task, official_layout
from .loading import unwrap_state_dict

__all__ = ["OfficialCheckpointError", "convert_if_official"]

logger = logging.getLogger(__name__)

#: how many unconvertible key names an error message lists
MAX_LISTED_KEYS = 10


class OfficialCheckpointError(ValueError):
    """An mmdet / mmseg checkpoint that cannot be converted; the message names the file."""


def _unwrap(loaded: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The state dict of a torch-loaded file (D2's ``{"model": <file content>}`` wrapping
    removed), or None when it is not a dict with string keys."""
    content = loaded.get("model", loaded) if isinstance(loaded, Mapping) else loaded
    try:
        return unwrap_state_dict(content)
    except ValueError:
        return None


def convert_if_official(loaded: Mapping[str, Any], filename: str) -> Optional[Dict[str, Any]]:
    """Convert ``loaded`` when it is an official K-Net checkpoint.

    Args:
        loaded: what Detectron2's checkpointer read from ``filename``: ``{"model": ...}``, where
            ``...`` is the file content (an mmcv ``{"meta", "state_dict", "optimizer"}`` dict or
            a bare state dict; a ``module.`` prefix is stripped).
        filename: the file, for messages.

    Returns:
        None when ``loaded`` is not in an official layout (load it as it is); else a Detectron2
        checkpoint ``{"model": {knet_d2 name: tensor}, "__author__": ..., "matching_heuristics":
        False, "knet_source": one line (layout, task, backbone)}``. The optimizer and meta data
        of the release are dropped. One INFO line says what was converted.

    Raises:
        OfficialCheckpointError: an mmdet / mmseg checkpoint with keys that have no conversion
            rule (another model family, e.g. an mmdet Mask R-CNN); names the file and up to
            :data:`MAX_LISTED_KEYS` keys.
    """
    state_dict = _unwrap(loaded)
    layout = None if state_dict is None else official_layout(state_dict)
    if layout is None:
        return None
    try:
        task, reason = detect_task(state_dict)
    except ValueError as e:  # e.g. fine-tuned on a dataset with another class count
        task, reason = "instance or panoptic", str(e)
    if layout == "mmseg":
        result = convert_semantic_state_dict(state_dict)
    else:  # instance and panoptic releases have the same modules
        result = convert_detection_state_dict(state_dict)
    if result.unconverted:
        keys = list(result.unconverted)
        shown = "; ".join(f"{k} ({result.unconverted[k]})" for k in keys[:MAX_LISTED_KEYS])
        more = f" and {len(keys) - MAX_LISTED_KEYS} more" if len(keys) > MAX_LISTED_KEYS else ""
        raise OfficialCheckpointError(
            f"{filename}: has the {layout} layout of an official K-Net checkpoint, but "
            f"{len(keys)} of its {len(state_dict)} keys have no K-Net conversion rule: "
            f"{shown}{more}. It is probably another {layout} model, not a K-Net release "
            "(see MODEL_ZOO.md for the released files)."
        )
    head, _, backbone = result.source.partition(", ")
    source = f"{head} {task}, {backbone}"
    dropped = Counter(result.ignored.values())
    dropped_text = "".join(f"; dropped {n} {why}" for why, n in dropped.items())
    logger.info(
        f"{filename} is an official K-Net checkpoint ({layout} layout, task {task}: {reason}; "
        f"backbone {backbone}): converted {len(result.model)} tensors to knet_d2 names in "
        f"memory{dropped_text}."
    )
    return {
        "model": result.model,
        "__author__": f"knet_d2 on-load converter ({source})",
        "matching_heuristics": False,
        "knet_source": source,
    }
