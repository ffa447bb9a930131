"""Training mapper for instance K-Net (COCO instance annotations: polygons or RLE).

Input dicts are D2 standard dicts (e.g. from ``load_coco_json`` / ``register_coco_instances``):
``file_name``, ``annotations`` (``category_id`` contiguous, ``segmentation``, ``iscrowd``,
``bbox``/``bbox_mode``), optionally ``height``/``width``/``image_id``.

Ground-truth decisions (K-Net's official instance training, ``docs/reference.md`` §2.1):

* **crowd** annotations (``iscrowd=1``) are dropped (the official code ignores them);
* annotations without a usable mask are skipped with a warning naming the file: no
  ``segmentation``, or only degenerate polygons (< 3 points / odd length). Degenerate polygons
  of an otherwise valid annotation are removed (pycocotools would misread a 4-value polygon
  as a box);
* masks that are empty after augmentation are dropped;
* a ``category_id`` outside ``0..NUM_THING_CLASSES-1`` or an RLE / mask array whose size is
  not the image's is an error naming the file.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from .base import (
    KNetDatasetMapperBase,
    c_ordered,
    image_to_tensor,
    masks_to_instances,
    register_mapper,
)

__all__ = ["KNetInstanceDatasetMapper"]

logger = logging.getLogger(__name__)


@register_mapper("knet_instance")
class KNetInstanceDatasetMapper(KNetDatasetMapperBase):
    """Map a COCO-instance-format dict to K-Net instance training inputs.

    Output keys (training): ``image`` (uint8 (3, H, W) tensor in ``image_format``),
    ``instances`` (``Instances((H, W))`` with ``gt_classes`` int64 in ``0..T-1``, ``gt_masks``
    BitMasks bool (N, H, W), ``gt_boxes`` from the masks), plus the dict's ``height``,
    ``width``, ``file_name``, ``image_id``; ``annotations`` is removed. (H, W) is the augmented
    size, not padded. Evaluation mode: test resize only, annotations dropped.
    Arguments and config keys: :class:`KNetDatasetMapperBase` (only ``num_thing_classes`` is
    used for validation).
    """

    def map_train(self, dataset_dict: dict, image: np.ndarray) -> dict:
        """Augment the image, transform the valid non-crowd annotations, rasterise their masks."""
        file_name = f"{dataset_dict['file_name']} (image_id {dataset_dict.get('image_id', '?')})"
        h0, w0 = image.shape[:2]
        annos = []
        for idx, obj in enumerate(dataset_dict.pop("annotations", None) or []):
            clean = self._check_annotation(obj, idx, file_name, (h0, w0))
            if clean is not None:
                annos.append(clean)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_size = tuple(image.shape[:2])

        if any(isinstance(t, T.CropTransform) for t in transforms.transforms):
            # D2 crops polygons with shapely (an optional dependency); rasterise them at the
            # original size instead, so crops work everywhere (masks then follow the image's
            # nearest-neighbour resize).
            for a in annos:
                if isinstance(a["segmentation"], list):
                    rles = mask_util.frPyObjects([list(p) for p in a["segmentation"]], h0, w0)
                    a["segmentation"] = mask_util.merge(rles)
        annos = [utils.transform_instance_annotations(a, transforms, image_size) for a in annos]
        for a in annos:
            # a flipped RLE mask is a negative-stride view, which D2's annotations_to_instances
            # cannot stack when an axis has size 1 (see c_ordered)
            if isinstance(a["segmentation"], np.ndarray):
                a["segmentation"] = c_ordered(a["segmentation"])
        raw = utils.annotations_to_instances(annos, image_size, mask_format="bitmask")
        # BitMasks holds bool (N, H, W): masks_to_instances uses that array without a copy
        masks = raw.gt_masks.tensor.numpy() if len(annos) else []
        instances = masks_to_instances(masks, raw.gt_classes.tolist(), image_size)

        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["instances"] = instances
        return dataset_dict

    def _check_annotation(
        self, obj: dict, idx: int, file_name: str, image_hw: tuple
    ) -> Optional[dict]:
        """Return a cleaned copy of one annotation, or ``None`` when it is not a target.

        ``file_name`` is the location named in messages (image path and image id).
        """
        if obj.get("iscrowd", 0):
            return None
        cat = obj.get("category_id")
        if isinstance(cat, bool) or not isinstance(cat, (int, np.integer)):
            raise ValueError(
                f"{file_name}: annotation {idx} has category_id {cat!r}; expected an int"
            )
        if not 0 <= int(cat) < self.num_thing_classes:
            raise ValueError(
                f"{file_name}: annotation {idx} has category_id {cat}, outside the contiguous "
                f"range [0, {self.num_thing_classes}) of MODEL.KNET.NUM_THING_CLASSES "
                "(load the dataset with load_coco_json / register_coco_instances, which map "
                "COCO ids to contiguous ids)"
            )
        segm = obj.get("segmentation")
        if segm is None or (isinstance(segm, list) and len(segm) == 0):
            logger.warning(f"{file_name}: annotation {idx} has no segmentation; skipped")
            return None

        h, w = image_hw
        if isinstance(segm, list):
            polygons: List = []
            for poly in segm:
                poly = np.asarray(poly, dtype=np.float64).reshape(-1)
                if len(poly) >= 6 and len(poly) % 2 == 0:
                    polygons.append(poly)
            if len(polygons) < len(segm):
                logger.warning(
                    f"{file_name}: annotation {idx} has {len(segm) - len(polygons)} degenerate "
                    "polygon(s) (< 3 points or odd length); they are skipped"
                )
            if not polygons:
                return None
            segm = polygons
        elif isinstance(segm, dict):
            size = segm.get("size")
            if size is None or "counts" not in segm:
                raise ValueError(f"{file_name}: annotation {idx} has an RLE without size/counts")
            if [int(s) for s in size] != [h, w]:
                raise ValueError(
                    f"{file_name}: annotation {idx} has an RLE of size {list(size)} (h, w) but "
                    f"the image is {[h, w]}"
                )
            if isinstance(segm["counts"], list):  # uncompressed RLE -> compressed
                segm = mask_util.frPyObjects(segm, h, w)
        elif isinstance(segm, np.ndarray):
            if segm.shape != (h, w):
                raise ValueError(
                    f"{file_name}: annotation {idx} has a mask array of shape {segm.shape} but "
                    f"the image is {(h, w)}"
                )
            # D2's annotation transform handles polygons and RLE, not arrays
            segm = mask_util.encode(np.asfortranarray(segm.astype(np.uint8)))
        else:
            raise ValueError(
                f"{file_name}: annotation {idx} has a segmentation of type {type(segm).__name__};"
                " expected polygons (list), COCO RLE (dict) or an (H, W) array"
            )

        clean = {"category_id": int(cat), "segmentation": segm}
        if "bbox" in obj and "bbox_mode" in obj:
            clean["bbox"], clean["bbox_mode"] = obj["bbox"], obj["bbox_mode"]
        else:  # the box is recomputed from the mask; D2's transform code needs one
            clean["bbox"], clean["bbox_mode"] = [0.0, 0.0, 0.0, 0.0], BoxMode.XYXY_ABS
        return clean
