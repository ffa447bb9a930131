"""Semantic-segmentation training mapper with the official K-Net / mmseg ADE20K recipe.

``INPUT.DATASET_MAPPER_NAME: "knet_semantic"``. Training pipeline (mmseg ``ade20k.py``, in
this order): ``Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))`` ->
``RandomCrop(512, cat_max_ratio=0.75)`` -> ``RandomFlip(0.5)`` -> ``PhotoMetricDistortion`` ->
``Pad(512, seg_pad_val=255)``. Detectron2 equivalents:

* resize: :class:`RandomRatioResize` (below) when ``MODEL.KNET.SEM.TRAIN_RESIZE_RATIO_RANGE`` is
  set: draw ``r ~ U(ratio_range)``, target ``(int(L*r), int(S*r))`` with the base scale
  ``(L, S) = (INPUT.MAX_SIZE_TRAIN, INPUT.MIN_SIZE_TRAIN[0])``, then rescale keeping the aspect
  ratio by ``min(int(L*r) / long_side, int(S*r) / short_side)`` (sizes rounded half up; bilinear
  image, nearest labels), i.e. the image fits in (2048 r, 512 r) -- exactly mmcv
  ``imrescale``. D2's ``ResizeShortestEdge(range (256, 1024), max_size)`` gives the same result
  except for images whose long side exceeds 4x the short side (its long-side limit does not
  scale with r) and the truncation of the target; with an empty ratio range the mapper falls
  back to that D2 augmentation (``MIN_SIZE_TRAIN``, ``MAX_SIZE_TRAIN``,
  ``MIN_SIZE_TRAIN_SAMPLING``).
* crop: D2 ``RandomCrop_CategoryAreaConstraint(INPUT.CROP.TYPE, INPUT.CROP.SIZE,
  INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, ignore)`` -- same 10-try rule as mmseg (if enabled).
* flip: ``RandomFlip`` (horizontal, 0.5) unless ``INPUT.RANDOM_FLIP == "none"``.
* photometric distortion: point_rend's ``ColorAugSSDTransform`` (brightness 32, contrast and
  saturation 0.5-1.5, hue 18, contrast first or last -- mmseg's ``PhotoMetricDistortion``) when
  ``INPUT.COLOR_AUG_SSD``.
* pad (bottom/right) to the crop size when ``INPUT.CROP.TYPE == "absolute"``: labels with the
  ignore value; the image with ``round(MODEL.PIXEL_MEAN)``, which is ~0 after the model's
  normalisation, as mmseg pads the already normalised image with 0.

Output (training): ``image`` uint8 (3, H, W) in ``INPUT.FORMAT``, ``sem_seg`` int64 (H, W)
(ignore = the dataset's ``ignore_label``, else ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``).
Evaluation: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` = mmseg
``Resize((2048, 512), keep_ratio=True)`` for (512, 2048); annotations dropped.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from PIL import Image

from ..image_io import read_label_map, size_mismatch_hint
from .base import KNetDatasetMapperBase, image_to_tensor, register_mapper

__all__ = ["RandomRatioResize", "KNetSemanticDatasetMapper", "build_semantic_augmentations"]


class RandomRatioResize(T.Augmentation):
    """mmseg ``Resize(img_scale=(long, short), ratio_range, keep_ratio=True)`` (see module doc)."""

    def __init__(
        self, short_edge: int, long_edge: int, ratio_range: Tuple[float, float] = (0.5, 2.0)
    ):
        """
        Args:
            short_edge, long_edge: base scale (512, 2048 for ADE20K).
            ratio_range: r is drawn uniformly from [lo, hi).
        """
        super().__init__()
        lo, hi = float(ratio_range[0]), float(ratio_range[1])
        assert 0 < lo <= hi, ratio_range
        self._init(locals())

    @staticmethod
    def output_size(h: int, w: int, short_edge: float, long_edge: float) -> Tuple[int, int]:
        """Keep-ratio size fitting (h, w) into (long_edge, short_edge) (mmcv ``rescale_size``)."""
        scale = min(long_edge / max(h, w), short_edge / min(h, w))
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        lo, hi = self.ratio_range
        r = np.random.random_sample() * (hi - lo) + lo
        newh, neww = self.output_size(
            h, w, int(self.short_edge * r), int(self.long_edge * r)
        )
        return T.ResizeTransform(h, w, newh, neww, Image.BILINEAR)


def build_semantic_augmentations(cfg, is_train: bool) -> List[T.Augmentation | T.Transform]:
    """Augmentations of :class:`KNetSemanticDatasetMapper` (without the final pad)."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    ratio_range = list(cfg.MODEL.KNET.SEM.TRAIN_RESIZE_RATIO_RANGE)
    if ratio_range:
        augs: List[T.Augmentation | T.Transform] = [
            RandomRatioResize(
                cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN, tuple(ratio_range)
            )
        ]
    else:
        augs = [
            T.ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            )
        ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                _ignore_label(cfg),
            )
        )
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    return augs


def _ignore_label(cfg) -> int:
    """The training set's ``ignore_label`` metadata, else ``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``."""
    if cfg.DATASETS.TRAIN:
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        if hasattr(meta, "ignore_label"):
            return int(meta.ignore_label)
    return int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)


@register_mapper("knet_semantic")
class KNetSemanticDatasetMapper(KNetDatasetMapperBase):
    """Map a D2 semantic dataset dict (``file_name``, ``sem_seg_file_name``) to model inputs."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation | T.Transform],
        image_format: str,
        num_classes: int,
        ignore_label: int = 255,
        pad_size: Optional[Tuple[int, int]] = None,
        image_pad_value: Sequence[float] | float = 0,
    ):
        """
        Args:
            is_train: training (targets) or evaluation (resized image only).
            augmentations: applied in order to image and labels.
            image_format: D2 ``read_image`` format.
            num_classes: K; labels must be in [0, K) or ``ignore_label``.
            ignore_label: label of unlabeled pixels and of the label padding.
            pad_size: (H, W) to pad training samples to (bottom/right); None = no padding.
            image_pad_value: per-channel (or scalar) image padding value, rounded to uint8.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            num_thing_classes=0,
            num_stuff_classes=num_classes,
            ignore_label=ignore_label,
        )
        self.pad_size = None if pad_size is None else (int(pad_size[0]), int(pad_size[1]))
        pad = np.broadcast_to(np.asarray(image_pad_value, dtype=np.float64), (3,))
        self.image_pad_value = np.clip(np.round(pad), 0, 255).astype(np.uint8)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        crop = cfg.INPUT.CROP
        pad_size = None
        if is_train and crop.ENABLED and crop.TYPE == "absolute":
            pad_size = tuple(crop.SIZE)
        return {
            "is_train": is_train,
            "augmentations": build_semantic_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "ignore_label": _ignore_label(cfg),
            "pad_size": pad_size,
            "image_pad_value": list(cfg.MODEL.PIXEL_MEAN),
        }

    def map_train(self, dataset_dict: dict, image: np.ndarray) -> dict:
        """Augment image + labels; add ``image`` (uint8 (3,H,W)) and ``sem_seg`` (int64 (H,W))."""
        file_name = dataset_dict.get("sem_seg_file_name")
        if file_name is None:
            raise KeyError(
                "KNetSemanticDatasetMapper needs 'sem_seg_file_name' in training "
                f"(keys: {sorted(dataset_dict)})"
            )
        sem_seg = read_label_map(file_name, "semantic label PNG")
        where = f"semantic label PNG {file_name} (image_id {dataset_dict.get('image_id', '?')})"
        if sem_seg.shape != image.shape[:2]:
            hint = size_mismatch_hint(dataset_dict["file_name"], image.shape[:2], sem_seg.shape)
            raise ValueError(
                f"{where} has shape {sem_seg.shape} (h, w), but image "
                f"{dataset_dict['file_name']} has {image.shape[:2]}{hint}"
            )
        self._check_labels(sem_seg, where)
        if sem_seg.dtype != np.uint8:
            # D2's resize of non-uint8 label maps goes through torch "nearest", which needs float
            sem_seg = sem_seg.astype(np.float32 if sem_seg.max() < 2**24 else np.float64)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        if self.pad_size is not None:
            image, sem_seg = self._pad(image, sem_seg)
        dataset_dict["image"] = image_to_tensor(np.asarray(image, dtype=np.uint8))
        dataset_dict["sem_seg"] = torch.as_tensor(np.ascontiguousarray(sem_seg, dtype=np.int64))
        return dataset_dict

    def _check_labels(self, sem_seg: np.ndarray, where: str) -> None:
        """Raise ``ValueError`` naming ``where`` when a label is not in [0, K) or ignore."""
        k = self.num_classes
        bad = (sem_seg >= k) & (sem_seg != self.ignore_label)
        if sem_seg.dtype.kind == "i":
            bad |= sem_seg < 0
        if bad.any():
            values = np.unique(sem_seg[bad])
            raise ValueError(
                f"{where}: label value(s) {values[:10].tolist()} outside the class range "
                f"[0, {k}) of MODEL.SEM_SEG_HEAD.NUM_CLASSES and not the ignore label "
                f"{self.ignore_label} (raw ADE20K labels need "
                "datasets/prepare_ade20k_sem_seg.py: 0 -> 255, k -> k - 1)"
            )

    def _pad(self, image: np.ndarray, sem_seg: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Pad bottom/right up to ``pad_size`` (no-op where already large enough)."""
        h, w = sem_seg.shape
        ph, pw = max(self.pad_size[0] - h, 0), max(self.pad_size[1] - w, 0)
        if ph == 0 and pw == 0:
            return image, sem_seg
        out = np.empty((h + ph, w + pw, image.shape[2]), dtype=image.dtype)
        out[...] = self.image_pad_value[: image.shape[2]]
        out[:h, :w] = image
        seg = np.full((h + ph, w + pw), self.ignore_label, dtype=sem_seg.dtype)
        seg[:h, :w] = sem_seg
        return out, seg
