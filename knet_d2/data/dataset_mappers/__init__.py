"""Dataset mappers, one per kind of ground truth (picked by ``INPUT.DATASET_MAPPER_NAME``).

* ``knet_panoptic``: :class:`KNetPanopticDatasetMapper` (COCO panoptic PNG + segments_info);
* ``knet_instance``: :class:`KNetInstanceDatasetMapper` (COCO instance polygons / RLE);
* ``knet_semantic``: :class:`KNetSemanticDatasetMapper` (semantic label PNG, mmseg ADE recipe).

A new mapper registers itself with ``@register_mapper("name")`` (from ``.base``); import its
module below so that the name exists once this package is imported.
"""
from __future__ import annotations

from .base import (
    MAPPER_REGISTRY,
    KNetDatasetMapperBase,
    build_knet_augmentations,
    masks_to_instances,
    register_mapper,
)
from .instance_mapper import KNetInstanceDatasetMapper
from .panoptic_mapper import KNetPanopticDatasetMapper
from .semantic_mapper import KNetSemanticDatasetMapper

__all__ = [
    "MAPPER_REGISTRY",
    "register_mapper",
    "build_knet_train_mapper",
    "build_knet_test_mapper",
    "build_knet_augmentations",
    "masks_to_instances",
    "KNetDatasetMapperBase",
    "KNetPanopticDatasetMapper",
    "KNetInstanceDatasetMapper",
    "KNetSemanticDatasetMapper",
]


def _mapper_class(cfg) -> type:
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPER_REGISTRY:
        raise KeyError(
            f"Unknown INPUT.DATASET_MAPPER_NAME {name!r}; registered dataset mappers: "
            f"{sorted(MAPPER_REGISTRY)}"
        )
    return MAPPER_REGISTRY[name]


def build_knet_train_mapper(cfg):
    """The training mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME`` (built with ``is_train``).

    Raises ``KeyError`` listing the registered names when the name is unknown.
    """
    return _mapper_class(cfg)(cfg, is_train=True)


def build_knet_test_mapper(cfg):
    """The same mapper in evaluation mode (test resize only, annotation fields dropped).

    Used instead of D2's ``DatasetMapper`` so that evaluation reads images exactly like training
    (16-bit, CMYK and palette images converted, unreadable files named in the error).
    """
    return _mapper_class(cfg)(cfg, is_train=False)
