"""knet_d2: K-Net (Zhang et al., NeurIPS 2021) as a Detectron2 extension.

Importing the package registers the model parts (META_ARCH / BACKBONE / SEM_SEG_HEADS
registries) and the project's datasets (DatasetCatalog / MetadataCatalog).
"""
# First, before Detectron2 / fvcore are imported: hide the named third-party warnings.
from .quiet_warnings import filter_third_party_warnings

filter_third_party_warnings()

from . import (  # noqa: E402
    data,  # noqa: F401  (registers datasets)
    modeling,  # noqa: F401  (registers model parts)
    path_handlers,  # noqa: F401  (file:// URLs in PathManager)
)
from .config import add_knet_config  # noqa: E402
from .engine.defaults import get_knet_cfg  # noqa: E402
from .knet_model import KNet  # noqa: E402
from .predictor import Predictor  # noqa: E402

__all__ = ["add_knet_config", "get_knet_cfg", "KNet", "Predictor"]
__version__ = "0.1.0"
