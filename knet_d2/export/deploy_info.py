"""What an exported graph needs besides its weights to be used on an image file.

:func:`deployment_info` collects, from the config and the dataset metadata, the parts of the
export metadata that the torch-free runtime (``knet_onnx``) reads:

* ``input``: the channel order the graph expects (``INPUT.FORMAT``) and the test-time resize
  of D2's ``DefaultPredictor`` (shortest edge to ``INPUT.MIN_SIZE_TEST``, longest edge at most
  ``INPUT.MAX_SIZE_TEST``, PIL bilinear on uint8 images);
* ``classes``: one entry per contiguous class id of the model output (things first for K-Net),
  with name, RGB colour, dataset category id and ``isthing``, read from the
  ``MetadataCatalog`` entry of the first test (else train) dataset.

Normalisation, padding and the post-processing thresholds are in the rest of the metadata
(:func:`~knet_d2.export.knet_export.export_metadata`).
"""
from __future__ import annotations

import logging
from typing import List, Optional

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.utils.colormap import colormap

__all__ = ["deployment_info", "class_table"]

logger = logging.getLogger(__name__)


def _palette_color(index: int) -> List[int]:
    palette = colormap(rgb=True, maximum=255)
    return [int(v) for v in palette[index % len(palette)]]


def _inverse(mapping: Optional[dict]) -> dict:
    return {int(v): int(k) for k, v in (mapping or {}).items()}


def class_table(dataset_name: Optional[str], num_classes: int, num_things: int) -> List[dict]:
    """One dict per contiguous class id ``0..num_classes-1``: ``name``, ``color`` ([r, g, b]),
    ``dataset_id`` (the category id of the dataset's annotation files) and ``isthing``.

    Names and colours come from ``stuff_classes`` / ``stuff_colors`` when they list every
    class (panoptic and semantic metadata), else from ``thing_classes`` / ``thing_colors``;
    dataset ids from ``stuff_dataset_id_to_contiguous_id`` (all classes) or
    ``thing_dataset_id_to_contiguous_id``. What the metadata lacks is filled in (``class N``,
    a D2 palette colour, ``dataset_id = N``) with a warning, so a table always exists.

    Args:
        dataset_name: a registered dataset (None: no metadata).
        num_classes: classes of the model output (T + S for K-Net, K for semantic models).
        num_things: T; classes ``>= T`` are stuff.
    """
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    names = colors = None
    ids: dict = {}
    for prefix in ("stuff", "thing"):
        cand = getattr(meta, f"{prefix}_classes", None) if meta is not None else None
        if cand is not None and len(cand) == num_classes:
            names = list(cand)
            colors = getattr(meta, f"{prefix}_colors", None)
            ids = _inverse(getattr(meta, f"{prefix}_dataset_id_to_contiguous_id", None))
            break
    if names is None:
        logger.warning(
            "dataset %r has no metadata listing %d classes: the export names them 'class N'",
            dataset_name, num_classes,
        )
    if colors is None or len(colors) != num_classes:
        colors = [_palette_color(i) for i in range(num_classes)]
    if len(ids) != num_classes:
        ids = {i: i for i in range(num_classes)}
    return [
        {
            "name": str(names[i]) if names is not None else f"class {i}",
            "color": [int(c) for c in colors[i]],
            "dataset_id": int(ids[i]),
            "isthing": i < num_things,
        }
        for i in range(num_classes)
    ]


def deployment_info(cfg: CfgNode, postprocess: dict) -> dict:
    """The ``input`` and ``classes`` sections of the export metadata.

    Args:
        cfg: the model's config.
        postprocess: the ``postprocess`` section of the export metadata (class counts).

    Returns:
        ``{"input": {...}, "dataset": name or None, "classes": [...]}`` (see the module
        docstring and :func:`class_table`).
    """
    if "num_classes" in postprocess:  # SemanticSegmentor
        num_classes, num_things = int(postprocess["num_classes"]), 0
    else:
        num_things = int(postprocess["num_thing_classes"])
        num_classes = num_things + int(postprocess["num_stuff_classes"])
    datasets = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    dataset = datasets[0] if datasets else None
    return {
        "input": {
            "format": cfg.INPUT.FORMAT,
            "resize": "shortest_edge",
            "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
            "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
            "interpolation": "pil_bilinear",
        },
        "dataset": dataset,
        "classes": class_table(dataset, num_classes, num_things),
    }
