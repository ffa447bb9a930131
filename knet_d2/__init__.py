"""knet_d2: K-Net (Zhang et al., NeurIPS 2021) as a Detectron2 extension.

Importing the package registers the model parts (META_ARCH / BACKBONE / SEM_SEG_HEADS
registries) and the project's datasets (DatasetCatalog / MetadataCatalog).
"""
from . import (
    data,  # noqa: F401  (registers datasets)
    modeling,  # noqa: F401  (registers model parts)
    path_handlers,  # noqa: F401  (file:// URLs in PathManager)
)
from .config import add_knet_config, get_knet_cfg
from .knet_model import KNet
from .predictor import Predictor

__all__ = ["add_knet_config", "get_knet_cfg", "KNet", "Predictor"]
__version__ = "0.1.0"
