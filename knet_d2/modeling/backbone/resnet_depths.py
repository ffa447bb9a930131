"""Blocks per stage of the standard ResNet depths (He et al., 2016), the one table of knet_d2.

Used by the backbone builders (:mod:`.deform_resnet`, :mod:`..semantic.resnet_v1c`) and by the
checkpoint inspection that names the backbone of an official file (``knet_d2.checkpoint``).
"""
from typing import Dict, Tuple

__all__ = ["RESNET_BLOCKS_PER_STAGE", "BOTTLENECK_MIN_DEPTH"]

#: depth -> number of blocks in res2, res3, res4, res5
RESNET_BLOCKS_PER_STAGE: Dict[int, Tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
#: depths from this one on use bottleneck blocks (conv1-conv3), smaller ones basic blocks
BOTTLENECK_MIN_DEPTH = 50
