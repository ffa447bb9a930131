"""Training mapper for panoptic K-Net (COCO panoptic format: RGB-encoded segment-id PNG).

Input dicts are those of D2's ``register_coco_panoptic`` and Cityscapes panoptic loaders:
``file_name``, ``pan_seg_file_name``, ``segments_info`` (``id``, contiguous ``category_id``,
optionally ``isthing``, ``iscrowd``), optionally ``height``/``width``/``image_id``.

Ground-truth decisions (K-Net's official panoptic training, ``docs/reference.md`` §2.1):

* **which classes are things**: by default contiguous ids ``0..T-1`` are things and
  ``T..T+S-1`` stuff; with a :class:`~knet_d2.data.class_layout.ClassLayout` (datasets such as
  D2's Cityscapes panoptic, whose trainIds put stuff first) the layout's thing ids. A segment
  whose ``isthing`` contradicts this is an error. ``gt_classes`` keeps the dataset's ids (the
  model converts them to its things-first axis).
* one mask per non-crowd **thing** segment, then one mask per **stuff class**: stuff segments
  that share a class are merged (the official code builds stuff masks from a semantic map).
* **crowd** segments (``iscrowd=1``) are not targets; their pixels are ``ignore_label`` in
  ``sem_seg``, like void (id 0 / unlisted ids).
* segments whose mask is empty after augmentation (e.g. cropped away) are dropped.
* PNG/JSON disagreement: a segment listed in ``segments_info`` but absent from the PNG, a
  category id outside the contiguous range, or a PNG whose size is not the image's is an
  error naming the files (and ``image_id``); non-zero PNG ids that ``segments_info`` does not
  list are void (``ignore_label``, no mask), logged once per PNG as a warning.
"""
from __future__ import annotations

import logging
from typing import List, NamedTuple, Optional

import numpy as np
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager
from panopticapi.utils import rgb2id
from PIL import Image

from ..class_layout import ClassLayout, class_layout_of_datasets
from ..image_io import size_mismatch_hint
from .base import (
    KNetDatasetMapperBase,
    array_to_tensor,
    image_to_tensor,
    masks_to_instances,
    register_mapper,
)

__all__ = ["KNetPanopticDatasetMapper", "read_panoptic_png"]

logger = logging.getLogger(__name__)


class _Segment(NamedTuple):
    id: int
    category_id: int
    isthing: bool
    iscrowd: bool


def read_panoptic_png(file_name: str) -> np.ndarray:
    """Read a COCO panoptic PNG as an (H, W, 3) uint8 array (segment id = R + 256 G + 256^2 B).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file when it is missing, cannot be
    decoded, or is not an RGB image (a palette or grey PNG would silently give wrong ids).
    """
    if not PathManager.isfile(file_name):
        raise FileNotFoundError(f"panoptic PNG not found: {file_name}")
    try:
        with PathManager.open(file_name, "rb") as f:
            img = Image.open(f)
            img.load()
    except OSError as e:
        raise ValueError(f"cannot decode panoptic PNG {file_name}: {e}") from e
    if img.mode != "RGB":
        raise ValueError(
            f"panoptic PNG {file_name} has mode {img.mode!r}; expected 'RGB' "
            "(COCO panoptic format, id = R + 256*G + 256^2*B)"
        )
    return np.asarray(img, dtype=np.uint8)


@register_mapper("knet_panoptic")
class KNetPanopticDatasetMapper(KNetDatasetMapperBase):
    """Map a COCO-panoptic-format dict to K-Net panoptic training inputs.

    Output keys (training): ``image`` (uint8 (3, H, W) tensor in ``image_format``),
    ``instances`` (``Instances((H, W))`` with ``gt_classes`` int64, ``gt_masks`` BitMasks
    (N, H, W), ``gt_boxes``; thing segments first, then one merged mask per stuff class, crowd
    and empty segments dropped), ``sem_seg`` (int64 (H, W) contiguous class map, ``ignore_label``
    for void and crowd pixels), plus the dict's ``height``, ``width``, ``file_name``,
    ``image_id``. ``segments_info`` is removed (it describes the un-augmented PNG).
    (H, W) is the augmented size, not padded (the model pads).

    Evaluation mode: test resize only, annotation keys dropped (see the base class).
    Arguments and config keys: :class:`KNetDatasetMapperBase`, plus ``class_layout`` (read from
    the metadata of ``DATASETS.TRAIN``): which contiguous ids are things.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, class_layout: Optional[ClassLayout] = None,
                 **kwargs):
        """
        Args:
            class_layout: thing/stuff split of the contiguous ids; ``None``: ids ``0..T-1`` are
                things. Its class counts must equal ``num_thing_classes`` /
                ``num_stuff_classes``.
            is_train, kwargs: see :class:`KNetDatasetMapperBase`.
        """
        super().__init__(is_train, **kwargs)
        if class_layout is not None and class_layout.is_identity:
            class_layout = None
        if class_layout is not None:
            class_layout.check_fits(self.num_thing_classes, self.num_stuff_classes)
        self.class_layout = class_layout
        self._thing_ids = (
            frozenset(range(self.num_thing_classes))
            if class_layout is None
            else class_layout.thing_dataset_ids
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        args = super().from_config(cfg, is_train)
        args["class_layout"] = class_layout_of_datasets(cfg.DATASETS.TRAIN)
        return args

    def map_train(self, dataset_dict: dict, image: np.ndarray) -> dict:
        """Augment image + panoptic PNG together and build ``instances`` and ``sem_seg``."""
        file_name = dataset_dict["file_name"]
        pan_file = dataset_dict.get("pan_seg_file_name")
        if pan_file is None:
            raise KeyError(
                f"{file_name}: dataset dict has no 'pan_seg_file_name'; the knet_panoptic mapper "
                "needs COCO panoptic annotations (register the dataset with register_coco_panoptic)"
            )
        if "segments_info" not in dataset_dict:
            raise KeyError(f"{file_name}: dataset dict has no 'segments_info'")
        pan_rgb = read_panoptic_png(pan_file)
        if pan_rgb.shape[:2] != image.shape[:2]:
            hint = size_mismatch_hint(file_name, image.shape[:2], pan_rgb.shape[:2])
            raise ValueError(
                f"panoptic PNG {pan_file} has size {pan_rgb.shape[:2]} (h, w) but image "
                f"{file_name} has size {image.shape[:2]}{hint}"
            )
        where = f"{pan_file} (image_id {dataset_dict.get('image_id', '?')})"
        segments = self._parse_segments(dataset_dict.pop("segments_info"), where)

        # The RGB-encoded id map is transformed as a "segmentation" (nearest interpolation on the
        # uint8 channels, so ids are never blended) and decoded afterwards.
        aug_input = T.AugInput(image, sem_seg=pan_rgb)
        self.augmentations(aug_input)
        image = aug_input.image
        pan_ids = rgb2id(aug_input.sem_seg)
        h, w = image.shape[:2]

        # Target order: non-crowd things, then one slot per stuff class (sorted).
        targets = [s for s in segments if not s.iscrowd]
        things = [s for s in targets if s.isthing]
        stuff_classes = sorted({s.category_id for s in targets if not s.isthing})
        slot = {id(s): i for i, s in enumerate(things)}
        stuff_slot = {c: len(things) + i for i, c in enumerate(stuff_classes)}
        slot_of = [slot[id(s)] if s.isthing else stuff_slot[s.category_id] for s in targets]
        masks = np.zeros((len(things) + len(stuff_classes), h, w), dtype=bool)
        sem_seg = np.full((h, w), self.ignore_label, dtype=np.int64)
        raw_ids = None
        for seg, k in zip(targets, slot_of):
            mask = pan_ids == seg.id
            if not mask.any():
                # Empty after augmentation is fine (resized / cropped away), absent from the
                # annotation PNG itself is not: check the un-augmented map lazily.
                if raw_ids is None:
                    raw_ids = rgb2id(pan_rgb)
                if not (raw_ids == seg.id).any():
                    raise ValueError(
                        f"{where}: segment id {seg.id} (category {seg.category_id}) is "
                        "listed in segments_info but absent from the PNG"
                    )
                continue
            sem_seg[mask] = seg.category_id
            masks[k] |= mask  # stuff segments of one class share a slot: merged
        self._warn_unlisted_ids(pan_ids, sem_seg, segments, where)
        instances = masks_to_instances(
            masks, [s.category_id for s in things] + stuff_classes, (h, w)
        )

        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["sem_seg"] = array_to_tensor(sem_seg)
        dataset_dict["instances"] = instances
        dataset_dict.pop("annotations", None)
        return dataset_dict

    def _warn_unlisted_ids(
        self, pan_ids: np.ndarray, sem_seg: np.ndarray, segments: List[_Segment], where: str
    ) -> None:
        """Warn (once per PNG) about non-zero PNG ids missing from ``segments_info``.

        Only pixels still ``ignore_label`` in ``sem_seg`` can hold such ids, so the full-size
        work is two comparisons; ``np.unique`` runs on the (usually few) crowd/unlisted pixels.
        """
        left = (sem_seg == self.ignore_label) & (pan_ids != 0)
        if not left.any():
            return
        known = [s.id for s in segments]
        unlisted = np.setdiff1d(np.unique(pan_ids[left]), known)
        warned = self.__dict__.setdefault("_unlisted_warned", set())
        if len(unlisted) and where not in warned:
            warned.add(where)
            logger.warning(
                f"{where}: PNG segment id(s) {unlisted[:5].tolist()}"
                f"{' ...' if len(unlisted) > 5 else ''} are not listed in segments_info; "
                "their pixels are treated as void (ignored)"
            )

    def _parse_segments(self, segments_info: List[dict], pan_file: str) -> List[_Segment]:
        """Validate ``segments_info`` against the contiguous things-first class layout.

        ``pan_file`` is the location named in the error messages (PNG path and image id).
        """
        num_t, num_c = self.num_thing_classes, self.num_classes
        out: List[_Segment] = []
        seen = set()
        for info in segments_info:
            try:
                seg_id = int(info["id"])
                cat = int(info["category_id"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{pan_file}: malformed segments_info entry {info!r} ({e!r})"
                ) from e
            class_is_thing = cat in self._thing_ids
            isthing = bool(info["isthing"]) if "isthing" in info else class_is_thing
            if not 0 <= cat < num_c:
                raise ValueError(
                    f"{pan_file}: segment {seg_id} has category_id {cat}, outside the contiguous "
                    f"range [0, {num_c}) of MODEL.KNET.NUM_THING_CLASSES + NUM_STUFF_CLASSES; "
                    "category ids must be contiguous (D2's register_coco_panoptic converts them "
                    "with the metadata's *_dataset_id_to_contiguous_id maps)"
                )
            if isthing != class_is_thing:
                kind = "thing" if isthing else "stuff"
                if self.class_layout is None:
                    expected = f"things at 0..{num_t - 1} and stuff at {num_t}..{num_c - 1}"
                else:
                    expected = f"things at {sorted(self._thing_ids)} (dataset metadata)"
                raise ValueError(
                    f"{pan_file}: segment {seg_id} is a {kind} with contiguous category_id {cat}, "
                    f"but K-Net needs {expected} (check the dataset's contiguous id maps and "
                    "MODEL.KNET.NUM_THING_CLASSES)"
                )
            if seg_id in seen:
                raise ValueError(f"{pan_file}: segment id {seg_id} is listed twice")
            seen.add(seg_id)
            out.append(_Segment(seg_id, cat, isthing, bool(info.get("iscrowd", 0))))
        return out
