"""Multi-scale + flip test-time augmentation for semantic segmentation (mmseg ``aug_test``).

mmseg (and the commented-out ms+flip settings of the official K-Net ADE configs) resize the
original image with ``img_scale=(2048, 512)`` times ratios ``(0.5, 0.75, 1.0, 1.25, 1.5,
1.75)`` (keep ratio), optionally flip it, run the model, resize the logits back to the original
size, take the softmax and average the (un-flipped) probabilities over all augmentations.

Here the ratios come from D2's keys: ``ratio_i = TEST.AUG.MIN_SIZES[i] / INPUT.MIN_SIZE_TEST``
(so ``MIN_SIZES: (256, 384, 512, 640, 768, 896)`` with ``MIN_SIZE_TEST: 512``); the long-side
target scales with the ratio too (``int(INPUT.MAX_SIZE_TEST * ratio_i)``), and
``TEST.AUG.MAX_SIZE`` is an absolute cap on the long side; ``TEST.AUG.FLIP`` adds the flipped
copies. :class:`SemanticSegmentorWithTTA` also accepts D2's ``DatasetMapperTTA`` (fixed
``TEST.AUG.MAX_SIZE`` for every scale) as ``tta_mapper``.
"""
import copy
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from fvcore.transforms import HFlipTransform, NoOpTransform
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SemSegDatasetMapperTTA", "SemanticSegmentorWithTTA"]


class SemSegDatasetMapperTTA:
    """One model-input dict per (scale, flip), resized from the original image.

    Every output dict is a copy of the input with ``image`` (uint8 (3, h_i, w_i)), the original
    ``height``/``width`` and ``transforms`` (a ``TransformList`` from the original image; it
    contains an ``HFlipTransform`` for flipped copies).
    """

    @configurable
    def __init__(
        self,
        *,
        min_sizes: Sequence[int],
        base_min_size: int,
        base_max_size: int,
        max_size: int,
        flip: bool,
        image_format: str = "RGB",
    ):
        """
        Args:
            min_sizes: short-side targets; ratio_i = min_sizes[i] / base_min_size.
            base_min_size, base_max_size: the single-scale test size (512, 2048).
            max_size: hard cap on the long side of every augmented image.
            flip: also add horizontally flipped copies.
            image_format: format used when re-reading ``file_name``.
        """
        self.min_sizes = [int(s) for s in min_sizes]
        self.base_min_size = int(base_min_size)
        self.base_max_size = int(base_max_size)
        self.max_size = int(max_size)
        self.flip = flip
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg) -> Dict:
        min_size_test = cfg.INPUT.MIN_SIZE_TEST
        if isinstance(min_size_test, (list, tuple)):
            min_size_test = min_size_test[0]
        return {
            "min_sizes": cfg.TEST.AUG.MIN_SIZES,
            "base_min_size": min_size_test,
            "base_max_size": cfg.INPUT.MAX_SIZE_TEST,
            "max_size": cfg.TEST.AUG.MAX_SIZE,
            "flip": cfg.TEST.AUG.FLIP,
            "image_format": cfg.INPUT.FORMAT,
        }

    def scaled_size(self, h: int, w: int, min_size: int) -> tuple:
        """Keep-ratio size of an (h, w) original for the short-side target ``min_size``."""
        ratio = min_size / self.base_min_size
        short_t, long_t = int(self.base_min_size * ratio), int(self.base_max_size * ratio)
        scale = min(long_t / max(h, w), short_t / min(h, w))
        scale = min(scale, self.max_size / max(h, w))
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def _original_image(self, dataset_dict: dict) -> np.ndarray:
        """(H0, W0, 3) uint8 original image: re-read ``file_name`` if possible, else the
        given ``image`` resized back to (height, width)."""
        h0 = dataset_dict.get("height")
        w0 = dataset_dict.get("width")
        file_name = dataset_dict.get("file_name")
        if file_name is not None:
            try:
                image = read_image(file_name, format=self.image_format)
                if h0 is None or image.shape[:2] == (h0, w0):
                    return image
            except OSError:
                pass
        image = dataset_dict["image"].permute(1, 2, 0).numpy()
        if h0 is not None and image.shape[:2] != (h0, w0):
            image = T.ResizeTransform(image.shape[0], image.shape[1], h0, w0).apply_image(image)
        return image

    def __call__(self, dataset_dict: dict) -> List[dict]:
        image = self._original_image(dataset_dict)
        h, w = image.shape[:2]
        ret = []
        for min_size in self.min_sizes:
            nh, nw = self.scaled_size(h, w, min_size)
            resize = T.ResizeTransform(h, w, nh, nw) if (nh, nw) != (h, w) else NoOpTransform()
            flips = [None, HFlipTransform(nw)] if self.flip else [None]
            for flip in flips:
                tfms = T.TransformList([resize] + ([flip] if flip is not None else []))
                new_image = tfms.apply_image(np.copy(image))
                d = copy.copy(dataset_dict)
                d["image"] = torch.as_tensor(np.ascontiguousarray(new_image.transpose(2, 0, 1)))
                d["height"], d["width"] = h, w
                d["transforms"] = tfms
                ret.append(d)
        return ret


def _is_flipped(d: dict) -> bool:
    return any(isinstance(t, HFlipTransform) for t in d["transforms"].transforms)


class SemanticSegmentorWithTTA(nn.Module):
    """A semantic model (D2 ``SemanticSegmentor`` interface) with multi-scale + flip TTA.

    ``__call__(batched_inputs)`` returns one ``{"sem_seg": (K, height, width)}`` per input:
    the mean over augmentations of ``softmax(model(aug)["sem_seg"])`` (un-flipped), i.e.
    averaged class probabilities (the argmax is what the evaluators use).
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 1):
        """
        Args:
            cfg: config (for the default ``tta_mapper``).
            model: returns ``[{"sem_seg": logits (K, height, width)}]`` for input dicts.
            tta_mapper: dict -> list of augmented dicts with ``transforms``; default
                :class:`SemSegDatasetMapperTTA` ``(cfg)``.
            batch_size: augmented images per model call.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = SemSegDatasetMapperTTA(cfg) if tta_mapper is None else tta_mapper
        self.batch_size = batch_size

    def __call__(self, batched_inputs: List[dict]) -> List[Dict[str, torch.Tensor]]:
        return [self._inference_one_image(x) for x in batched_inputs]

    @torch.no_grad()
    def _inference_one_image(self, inp: dict) -> Dict[str, torch.Tensor]:
        augmented = self.tta_mapper(inp)
        probs: Optional[torch.Tensor] = None
        for start in range(0, len(augmented), self.batch_size):
            chunk = augmented[start : start + self.batch_size]
            outputs = self.model(chunk)
            for aug, out in zip(chunk, outputs):
                p = out["sem_seg"].float().softmax(dim=0)
                if _is_flipped(aug):
                    p = p.flip(dims=[2])
                probs = p if probs is None else probs + p
        assert probs is not None, "the TTA mapper produced no inputs"
        return {"sem_seg": probs / len(augmented)}
