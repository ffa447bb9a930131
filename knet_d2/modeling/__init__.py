"""K-Net model parts; importing this module registers them with Detectron2's registries."""
from . import backbone, kernel_head, kernel_update_head, kernel_updator, neck, semantic  # noqa: F401
from .criterion import KNetCriterion  # noqa: F401
from .kernel_head import KernelGenerationHead  # noqa: F401
from .kernel_update_head import KernelUpdateHead, build_kernel_update_head  # noqa: F401
from .kernel_updator import KernelUpdator  # noqa: F401
from .matcher import HungarianMatcher  # noqa: F401
from .neck import LocalizationFPN, build_knet_neck  # noqa: F401
from .position_encoding import SinePositionalEncoding  # noqa: F401
from .postprocessing import (  # noqa: F401
    instance_inference,
    panoptic_inference,
    rescale_masks,
    semantic_inference,
)
