#!/usr/bin/env python
"""Reference baselines on the synthetic val split, scored by the same D2 evaluators as K-Net.

    python -m benchmarks.synthetic_baselines --output output/synthetic_baselines

* ``colour_only``: a per-pixel classifier that sees only the pixel's RGB value. It is the
  Bayes rule on a 32 x 32 x 32 RGB histogram fit on the train split (each colour bin predicts
  the class with most training pixels of that colour; empty bins the most frequent class),
  i.e. the best any colour-only pixel rule of that resolution can do on the train split.
* ``majority_stuff``: the stuff class with most training pixels, predicted everywhere.

A semantic label map becomes the three outputs D2's evaluators read
(:func:`semantic_to_outputs`): ``sem_seg`` (one-hot scores), ``panoptic_seg`` (one segment per
stuff class present, one per 8-connected component of each thing class) and ``instances`` (the
thing components, score 1, boxes around them). Components under 4 px, smaller than any object
of the set, are dropped. All numbers come from
:func:`~benchmarks.synthetic_evaluators.build_synthetic_evaluator` (COCOPanopticEvaluator with
per-class PQ, COCOEvaluator, SemSegEvaluator).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, Iterable, Tuple

import cv2
import numpy as np
import torch

__all__ = [
    "ColourHistogramClassifier",
    "semantic_to_outputs",
    "fit_colour_classifier",
    "evaluate_baselines",
    "flatten_results",
]

MIN_COMPONENT_AREA = 4


class ColourHistogramClassifier:
    """Per-pixel class from the RGB value alone: the majority class of its colour bin.

    Args:
        num_classes: number of contiguous classes (labels 0..num_classes-1; others ignored).
        bins: bins per channel (``bins ** 3`` colour cells).
    """

    def __init__(self, num_classes: int, bins: int = 32) -> None:
        if 256 % bins:
            raise ValueError(f"bins must divide 256, got {bins}")
        self.num_classes, self.bins = int(num_classes), int(bins)
        self.counts = np.zeros((bins**3, num_classes), np.int64)
        self._lookup = None

    def _cells(self, image: np.ndarray) -> np.ndarray:
        q = image.astype(np.int64) // (256 // self.bins)  # (H, W, 3)
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def update(self, image: np.ndarray, labels: np.ndarray) -> None:
        """Count the pixels of one (H, W, 3) uint8 RGB image with (H, W) labels."""
        cells, labels = self._cells(image).ravel(), labels.ravel().astype(np.int64)
        keep = labels < self.num_classes
        flat = cells[keep] * self.num_classes + labels[keep]
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        self._lookup = None

    @property
    def class_pixels(self) -> np.ndarray:
        """(num_classes,) training pixels per class."""
        return self.counts.sum(0)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) int64 class of every pixel of an (H, W, 3) uint8 RGB image."""
        if self._lookup is None:
            if not self.counts.any():
                raise RuntimeError("ColourHistogramClassifier.predict before any update()")
            lookup = self.counts.argmax(1)
            lookup[self.counts.sum(1) == 0] = int(self.class_pixels.argmax())
            self._lookup = lookup
        return self._lookup[self._cells(image)]


def semantic_to_outputs(labels: np.ndarray, num_things: int, num_classes: int) -> dict:
    """D2 model outputs from an (H, W) contiguous label map (things ``0..num_things-1``;
    labels >= num_classes are unlabeled: no segment, no score).

    Returns ``{"sem_seg": (C, H, W) float one-hot, "panoptic_seg": ((H, W) int32 ids,
    segments_info), "instances": Instances}``.
    """
    from benchmarks.synthetic_evaluators import mask_predictions

    h, w = labels.shape
    labels = np.where(labels < num_classes, labels, num_classes).astype(np.int64)
    # one-hot scores; a label >= num_classes (unlabeled) scores 0 everywhere and is left out
    sem = torch.nn.functional.one_hot(torch.from_numpy(labels), num_classes + 1)[..., :-1]
    pan = np.zeros((h, w), np.int32)
    segments, masks, classes = [], [], []
    for k in np.unique(labels):
        k = int(k)
        if k >= num_classes:
            continue
        region = (labels == k).astype(np.uint8)
        if k >= num_things:
            parts = [region.astype(bool)]
        else:
            n, comp, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
            parts = [comp == c for c in range(1, n)
                     if stats[c, cv2.CC_STAT_AREA] >= MIN_COMPONENT_AREA]
            masks += parts
            classes += [k] * len(parts)
        for part in parts:
            seg_id = len(segments) + 1
            pan[part] = seg_id
            segments.append({"id": seg_id, "category_id": k, "isthing": k < num_things})
    inst = mask_predictions((h, w), torch.from_numpy(np.stack(masks)) if masks
                            else torch.zeros((0, h, w), dtype=torch.bool),
                            torch.tensor(classes, dtype=torch.int64), torch.ones(len(classes)))
    return {"sem_seg": sem.permute(2, 0, 1).float(),
            "panoptic_seg": (torch.from_numpy(pan), segments), "instances": inst}


def _image_and_labels(d: dict) -> Tuple[np.ndarray, np.ndarray]:
    from detectron2.data.detection_utils import read_image

    image = read_image(d["file_name"], format="RGB")
    labels = read_image(d["sem_seg_file_name"]).astype(np.uint8)
    return image, labels


def fit_colour_classifier(dataset_dicts: Iterable[dict], num_classes: int,
                          bins: int = 32) -> ColourHistogramClassifier:
    """Fit :class:`ColourHistogramClassifier` on dataset dicts with ``sem_seg_file_name``."""
    clf = ColourHistogramClassifier(num_classes, bins)
    for d in dataset_dicts:
        clf.update(*_image_and_labels(d))
    return clf


def flatten_results(results: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """``{"panoptic_seg": {"PQ": ..}, ..}`` -> ``{"panoptic_seg/PQ": ..}`` (floats, NaN kept)."""
    return {f"{g}/{k}": float(v) for g, r in results.items() for k, v in r.items()}


def evaluate_baselines(train_name: str, val_name: str, output_dir: str) -> dict:
    """Fit the colour-only classifier on ``train_name`` (a ``sem_seg`` dataset) and score both
    baselines on ``val_name`` (a synthetic panoptic dataset) with D2's evaluators.

    Returns ``{"colour_only": {metric: value}, "majority_stuff": {...}, "details": {...}}``;
    metric keys as :func:`flatten_results`. A baseline that predicts no instance gets mask and
    box AP 0 (COCOEvaluator reports NaN when there is nothing to score).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from benchmarks.synthetic_evaluators import build_synthetic_evaluator

    meta = MetadataCatalog.get(val_name)
    num_things, num_classes = len(meta.thing_classes), len(meta.stuff_classes)
    clf = fit_colour_classifier(DatasetCatalog.get(train_name), num_classes)
    majority = num_things + int(clf.class_pixels[num_things:].argmax())
    val = DatasetCatalog.get(val_name)
    out: dict = {"details": {"train": train_name, "val": val_name, "bins": clf.bins,
                             "majority_stuff_class": meta.stuff_classes[majority]}}
    predictors = {"colour_only": clf.predict,
                  "majority_stuff": lambda img: np.full(img.shape[:2], majority, np.int64)}
    for name, predict in predictors.items():
        evaluator = build_synthetic_evaluator(
            val_name, ("panoptic", "instance", "semantic"), str(Path(output_dir) / name)
        )
        evaluator.reset()
        for d in val:
            image, _ = _image_and_labels(d)
            outputs = semantic_to_outputs(predict(image), num_things, num_classes)
            evaluator.process([d], [outputs])
        metrics = flatten_results(evaluator.evaluate())
        for key in [k for k in metrics if k.split("/")[0] in ("segm", "bbox")]:
            if math.isnan(metrics[key]):  # no instance predicted on the whole split
                metrics[key] = 0.0
        out[name] = metrics
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="knet_synth_sem_seg_train")
    ap.add_argument("--val", default="knet_synth_panoptic_val")
    ap.add_argument("--output", default="output/synthetic_baselines")
    a = ap.parse_args(argv)
    import knet_d2  # noqa: F401  (registers the synthetic names)
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets

    ensure_synthetic_for_datasets([a.train, a.val])
    res = evaluate_baselines(a.train, a.val, a.output)
    Path(a.output).mkdir(parents=True, exist_ok=True)
    path = Path(a.output) / "baselines.json"
    path.write_text(json.dumps(res, indent=2))
    for name in ("colour_only", "majority_stuff"):
        m = res[name]
        print(f"[baselines] {name}: PQ {m['panoptic_seg/PQ']:.2f} PQ_th "
              f"{m['panoptic_seg/PQ_th']:.2f} PQ_st {m['panoptic_seg/PQ_st']:.2f} mask AP "
              f"{m['segm/AP']:.2f} mIoU {m['sem_seg/mIoU']:.2f}")
    print(f"[baselines] written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
