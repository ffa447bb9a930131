"""Dataset registration; importing this package registers the project's dataset names."""
from . import (
    register_ade20k_panoptic,  # noqa: F401  (knet_ade20k_panoptic_*)
    register_coco_panoptic_semseg,  # noqa: F401  (knet_coco_2017_*_panoptic_with_sem_seg)
    register_synthetic,  # noqa: F401  (knet_synth_*)
)
from .register_custom import (
    register_instance_dataset,
    register_panoptic_dataset,
    register_sem_seg_dataset,
)

__all__ = ["register_instance_dataset", "register_panoptic_dataset", "register_sem_seg_dataset"]
