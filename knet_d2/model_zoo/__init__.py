"""knet_d2's model zoo, as ``detectron2.model_zoo``: configs and official checkpoints by name.

>>> from knet_d2 import model_zoo
>>> model_zoo.get_checkpoint_url("coco/panoptic-segmentation/knet_R50_1x.yaml")  # doctest: +SKIP
>>> model = model_zoo.get("coco/panoptic-segmentation/knet_R50_1x.yaml", trained=True)  # +SKIP

The table is :data:`MODEL_ZOO` (:mod:`knet_d2.known_weights`); MODEL_ZOO.md shows the same rows.
"""
from ..known_weights import MODEL_ZOO, ModelZooEntry
from .model_zoo import (
    CONFIG_ROOT,
    entry,
    get,
    get_checkpoint_url,
    get_config,
    get_config_file,
    names,
)

__all__ = [
    "CONFIG_ROOT",
    "MODEL_ZOO",
    "ModelZooEntry",
    "entry",
    "get",
    "get_checkpoint_url",
    "get_config",
    "get_config_file",
    "names",
]
