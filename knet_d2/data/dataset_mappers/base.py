"""Parts shared by the K-Net dataset mappers: the name registry, the augmentation list, image
reading, the test-time path and the construction of the ``instances`` targets.

A mapper class registers itself under the name used in ``cfg.INPUT.DATASET_MAPPER_NAME``::

    @register_mapper("knet_semantic")
    class KNetSemanticDatasetMapper: ...

and :func:`knet_d2.data.dataset_mappers.build_knet_train_mapper` looks the name up in
:data:`MAPPER_REGISTRY` (the module that defines the class must have been imported).
"""
from __future__ import annotations

import abc
import copy
import logging
from typing import Any, Callable, Dict, List, Sequence, Tuple, TypeVar

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import BitMasks, Boxes, Instances

from ..image_io import read_image, size_mismatch_hint

__all__ = [
    "MAPPER_REGISTRY",
    "register_mapper",
    "build_knet_augmentations",
    "KNetDatasetMapperBase",
    "masks_to_instances",
    "mask_boxes",
    "image_to_tensor",
    "array_to_tensor",
    "c_ordered",
]

logger = logging.getLogger(__name__)

#: ``INPUT.DATASET_MAPPER_NAME`` -> mapper class (filled by :func:`register_mapper`).
MAPPER_REGISTRY: Dict[str, type] = {}

_C = TypeVar("_C", bound=type)


def register_mapper(name: str) -> Callable[[_C], _C]:
    """Class decorator: make the class buildable as ``INPUT.DATASET_MAPPER_NAME = name``.

    The class must be constructible as ``cls(cfg, is_train=True)`` (a D2 ``@configurable``
    ``__init__`` with a ``from_config(cls, cfg, is_train)`` does this).
    Registering a different class under a taken name raises ``KeyError``.
    """

    def _register(cls: _C) -> _C:
        old = MAPPER_REGISTRY.get(name)
        if old is not None and old is not cls:
            raise KeyError(
                f"Dataset mapper name {name!r} is already registered to "
                f"{old.__module__}.{old.__qualname__}"
            )
        MAPPER_REGISTRY[name] = cls
        return cls

    return _register


def build_knet_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """The augmentation list of D2's default ``DatasetMapper``, with two options.

    Training: ``[RandomCrop (only if INPUT.CROP.ENABLED)], ResizeShortestEdge(MIN_SIZE_TRAIN,
    MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING), RandomFlip (unless INPUT.RANDOM_FLIP == "none")``.
    K-Net's ms-3x "range" schedule is ``MIN_SIZE_TRAIN: (640, 800)`` with
    ``MIN_SIZE_TRAIN_SAMPLING: "range"``.
    Test: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``.
    As in D2, the crop comes before the resize, so the output size is still set by the resize;
    with ``INPUT.CROP.AFTER_RESIZE`` it comes right after the resize instead (scale, then a
    fixed-size crop: the Cityscapes / ADE20K recipe). ``INPUT.COLOR_AUG_SSD`` appends the SSD
    photometric distortion (point_rend's ``ColorAugSSDTransform``).
    """
    augs = list(utils.build_augmentation(cfg, is_train))
    if is_train and cfg.INPUT.CROP.ENABLED:
        crop = T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)
        after_resize = cfg.INPUT.CROP.get("AFTER_RESIZE", False)
        # build_augmentation returns [ResizeShortestEdge, (RandomFlip)]
        augs.insert(1 if after_resize else 0, crop)
    if is_train and cfg.INPUT.get("COLOR_AUG_SSD", False):
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    return augs


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> contiguous (C, H, W) tensor with the same dtype.

    Always copies: ``np.ascontiguousarray`` keeps negative strides (from a flip) on arrays with
    a size-1 axis and read-only PIL buffers, which ``torch.as_tensor`` rejects or warns about.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.as_tensor(np.array(image.transpose(2, 0, 1), order="C", copy=True))


def c_ordered(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself when it is C-contiguous, writable and has no negative stride, else a
    C-ordered copy. ``np.ascontiguousarray`` alone misses the last two: it keeps the negative
    stride of a flipped array with a size-1 axis, which ``torch.from_numpy`` rejects."""
    if not (arr.flags.c_contiguous and arr.flags.writeable) or any(x < 0 for x in arr.strides):
        arr = np.array(arr, order="C", copy=True)
    return arr


def array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``torch.as_tensor`` of :func:`c_ordered` ``(arr)``: no copy when none is needed."""
    return torch.as_tensor(c_ordered(arr))


def masks_to_instances(
    masks: Sequence[np.ndarray] | np.ndarray,
    classes: Sequence[int],
    image_size: Tuple[int, int],
) -> Instances:
    """Build the K-Net targets from binary masks at the augmented image size.

    ``masks`` is a sequence of (H, W) arrays or one bool (N, H, W) array (used without a copy).
    Masks with no foreground pixel are dropped (with their class). The result has
    ``gt_classes`` (int64, (N,)), ``gt_masks`` (:class:`BitMasks`, bool (N, H, W)) and
    ``gt_boxes`` (tight boxes of the masks, for D2 tools such as ``visualize_data``).
    """
    h, w = int(image_size[0]), int(image_size[1])
    if len(masks) != len(classes):
        raise ValueError(f"{len(masks)} masks but {len(classes)} classes")
    if isinstance(masks, np.ndarray) and masks.dtype == bool and masks.ndim == 3:
        mask_arr = masks
    elif len(masks):
        mask_arr = np.stack([np.asarray(m, dtype=bool) for m in masks])
    else:
        mask_arr = np.zeros((0, h, w), dtype=bool)
    if mask_arr.shape[1:] != (h, w):
        raise ValueError(f"masks of shape {mask_arr.shape[1:]} do not match the image {(h, w)}")
    keep = mask_arr.reshape(len(mask_arr), h * w).any(axis=1)
    cls_arr = np.asarray(list(classes), dtype=np.int64).reshape(-1)
    if not keep.all():
        mask_arr, cls_arr = mask_arr[keep], cls_arr[keep]

    instances = Instances((h, w))
    instances.gt_classes = array_to_tensor(cls_arr)
    instances.gt_masks = BitMasks(array_to_tensor(mask_arr))
    instances.gt_boxes = Boxes(torch.as_tensor(mask_boxes(mask_arr)))
    return instances


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes (float32, (N, 4)) of bool (N, H, W) masks; all-zero for an empty mask.

    Same result as ``BitMasks.get_bounding_boxes`` (x2/y2 exclusive), about 10x faster on CPU.
    """
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    if len(masks) == 0:
        return boxes
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for i in range(len(masks)):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


class KNetDatasetMapperBase(abc.ABC):
    """Common skeleton of the K-Net mappers (subclasses implement :meth:`map_train`).

    ``__call__`` deep-copies the dict, reads ``file_name`` in ``image_format`` and checks it
    against ``height``/``width``. In training it calls ``map_train``; in evaluation it only
    applies the (test) augmentations and drops every annotation field, like D2's default mapper.
    """

    #: annotation keys removed from the dicts in evaluation mode
    _ANNOTATION_KEYS = (
        "annotations",
        "segments_info",
        "pan_seg_file_name",
        "sem_seg_file_name",
    )

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation | T.Transform],
        image_format: str,
        num_thing_classes: int,
        num_stuff_classes: int = 0,
        ignore_label: int = 255,
    ):
        """
        Args:
            is_train: training (targets are built) or evaluation (image only).
            augmentations: applied in order to the image and the annotations.
            image_format: a D2 ``read_image`` format, e.g. ``"RGB"`` or ``"BGR"``.
            num_thing_classes: T; thing classes have contiguous ids ``0..T-1``.
            num_stuff_classes: S; stuff classes have contiguous ids ``T..T+S-1``.
            ignore_label: value of void / crowd pixels in ``sem_seg``.
        """
        if num_thing_classes < 0 or num_stuff_classes < 0:
            raise ValueError(
                f"class counts must be >= 0, got T={num_thing_classes}, S={num_stuff_classes}"
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_thing_classes = int(num_thing_classes)
        self.num_stuff_classes = int(num_stuff_classes)
        self.ignore_label = int(ignore_label)
        mode = "training" if is_train else "inference"
        logger.info(f"[{type(self).__name__}] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        """Arguments of ``__init__`` from a config with :func:`add_knet_config` keys."""
        return {
            "is_train": is_train,
            "augmentations": build_knet_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_thing_classes": cfg.MODEL.KNET.NUM_THING_CLASSES,
            "num_stuff_classes": cfg.MODEL.KNET.NUM_STUFF_CLASSES,
        }

    @property
    def num_classes(self) -> int:
        """T + S."""
        return self.num_thing_classes + self.num_stuff_classes

    def read_image(self, dataset_dict: dict) -> np.ndarray:
        """Read ``file_name`` in ``image_format`` with :func:`knet_d2.data.image_io.read_image`
        and check it against the dict's ``height``/``width`` (D2 ``check_image_size``).

        Raises ``FileNotFoundError`` / ``ImageReadError`` (an ``OSError``) naming the file when
        it is missing or cannot be decoded, and D2's ``SizeMismatchError`` (a ``ValueError``)
        naming it when the size differs, with an explanation when EXIF rotation is the cause.
        """
        file_name = dataset_dict.get("file_name")
        if file_name is None:
            raise KeyError(f"dataset dict has no 'file_name' (keys: {sorted(dataset_dict)})")
        image = read_image(file_name, format=self.image_format)
        try:
            utils.check_image_size(dataset_dict, image)
        except utils.SizeMismatchError as e:
            expected = (dataset_dict.get("height"), dataset_dict.get("width"))
            hint = size_mismatch_hint(file_name, image.shape[:2], expected)
            raise utils.SizeMismatchError(f"{e}{hint}") from None
        return image

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one D2 dataset dict to the model's input dict (see the class docstring)."""
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.read_image(dataset_dict)
        if not self.is_train:
            aug_input = T.AugInput(image)
            self.augmentations(aug_input)
            for key in self._ANNOTATION_KEYS:
                dataset_dict.pop(key, None)
            dataset_dict["image"] = image_to_tensor(aug_input.image)
            return dataset_dict
        return self.map_train(dataset_dict, image)

    @abc.abstractmethod
    def map_train(self, dataset_dict: dict, image: np.ndarray) -> dict:
        """Augment ``image`` and build the training targets into ``dataset_dict``."""

