#!/usr/bin/env python
"""Can the synthetic thing shapes be told apart at all, and how much mask AP does that allow?

The mask-resolution ceiling (:mod:`benchmarks.mask_resolution_ceiling`) gives K-Net perfect
classes. This script replaces them by the classes a dedicated learner gets right, to see
whether the classes themselves cap mask AP on the synthetic set (shapes from 4 px, textured
like stuff, occluded up to 70%, beside unlabeled distractor shapes).

The learner is generous on purpose. It classifies one object at a time (5 classes: circle,
square, triangle, star, distractor) from a crop around the object's visible pixels, resized to
``CROP`` x ``CROP`` (so small shapes are enlarged), with that object's exact visible mask as a
fourth input channel: the grouping K-Net's kernels would have to learn is given. It trains on
every thing and distractor of the 2000 training images (the images exactly as written to the
split's JPEG files) for several epochs, with flips and 90-degree rotations, which change no
label.

Reported:

* the learner's accuracy after each epoch on the objects of ``--num-eval`` images rendered
  like the val split (the first 60 are the val split itself), overall and by the object's
  visible extent (longer side of its visible box, px), with the confusion matrix at the end;
  ten epochs are about as many training images as the quickstart's 10-minute instance run
  sees (2500 iterations x 8);
* mask AP (D2's COCOEvaluator) on the val split of predictions that take their classes and
  scores from the learner (one prediction per object and thing class, score = the learner's
  probability; distractors are predicted too, as a model sees them) and their masks from
  either the ground truth (``exact``) or the optimum of K-Net's own mask losses on its
  stride-8 grid (``knet_loss``, the mask-resolution ceiling's decoder); beside them, the same
  masks with perfect classes at score 1 (as the mask-resolution ceiling scores them) and, for
  ``knet_loss``, with perfect classes scored by each drawn mask's IoU (the best ranking).

    python -m benchmarks.shape_identifiability --output output/shape_identifiability
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

__all__ = [
    "CROP", "EXTENT_BINS", "ObjectCrops", "render_objects", "crop_objects", "collect",
    "ShapeClassifier", "train_classifier", "predict_proba", "accuracy_by_extent", "confusion",
    "decode_masks", "evaluate_map", "main",
]

#: side of the classifier's input crops (px)
CROP = 32
#: upper edges of the visible-extent bins (px) the accuracy is reported in
EXTENT_BINS = (8, 16, 32, 10_000)
#: the learner's fifth class: an unlabeled distractor shape
DISTRACTOR = 4
CLASS_NAMES = ("circle", "square", "triangle", "star", "distractor")
#: the ``classes`` modes of :func:`evaluate_map` as the table names them
ROW_NAMES = {"true": "true classes", "true_iou": "true classes, scored by mask IoU",
             "learned": "learned classes"}


@dataclass
class ObjectCrops:
    """The objects of a set of images, each as one classifier input.

    Attributes:
        crops: (N, 4, CROP, CROP) float: RGB in [0, 255] and the visible mask in [0, 1].
        labels: (N,) int64 in 0..4 (thing classes in dataset-id order, then distractor).
        extent: (N,) int64, longer side of the visible box (px).
        image_index: (N,) int64, the image each object is in.
        crowd: (N,) bool, the thing is a crowd annotation (left out of the AP predictions).
        masks: N (H, W) bool visible masks, only when kept (``keep_masks``).
    """

    crops: torch.Tensor
    labels: torch.Tensor
    extent: torch.Tensor
    image_index: torch.Tensor
    crowd: torch.Tensor
    masks: List[torch.Tensor] | None = None


def render_objects(index: int, image_size: int, seed: int) -> Tuple[np.ndarray, list]:
    """Image ``index`` of a split as its JPEG file holds it (H, W, 3 uint8 RGB) and its
    objects: ``[(visible mask (H, W) bool, label 0..4, crowd)]``."""
    from knet_d2.data.synthetic_coco import JPEG_QUALITY
    from knet_d2.data.synthetic_scenes import THING_CATEGORIES, render_sample

    sample = render_sample(index, image_size, seed)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(sample.image[:, :, ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode image {index} of the split as JPEG")
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    label_of = {c["id"]: k for k, c in enumerate(THING_CATEGORIES)}
    objects = [(s["mask"], label_of[s["category_id"]], bool(s["iscrowd"]))
               for s in sample.segments if s["category_id"] in label_of]
    objects += [(m, DISTRACTOR, False) for m in sample.distractors if m.any()]
    return image, objects


def crop_objects(image: np.ndarray, masks: Sequence[np.ndarray]) -> Tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """(H, W, 3) image and N (H, W) bool masks -> (N, 4, CROP, CROP) crops and (N,) extents.

    Each crop is a square window centred on the visible box, 1.5 x its longer side plus 2 px,
    resampled bilinearly (``roi_align``, averaging when it shrinks)."""
    if not len(masks):
        return torch.zeros(0, 4, CROP, CROP), torch.zeros(0, dtype=torch.int64)
    from detectron2.structures import BitMasks

    img = torch.from_numpy(image).permute(2, 0, 1).float()
    m = torch.from_numpy(np.stack(masks))
    box = BitMasks(m).get_bounding_boxes().tensor  # (N, 4) x0, y0, x1, y1 (exclusive)
    side = (box[:, 2:] - box[:, :2]).max(1).values
    centre = (box[:, :2] + box[:, 2:]) / 2
    half = ((1.5 * side + 2) / 2)[:, None]
    windows = torch.cat([torch.arange(len(m), dtype=box.dtype)[:, None], centre - half,
                         centre + half], 1)
    # one 4-channel map per object (the image and that object's mask); window k reads map k
    feats = torch.cat([img[None].expand(len(m), -1, -1, -1), m[:, None].float()], 1)
    crops = roi_align(feats, windows, CROP, aligned=True)
    return crops, side.to(torch.int64)


def collect(indices: Sequence[int], image_size: int, seed: int, keep_masks: bool = False
            ) -> ObjectCrops:
    """:class:`ObjectCrops` of every object of the images ``indices`` of a split."""
    crops, labels, extent, image_index, crowd, masks = [], [], [], [], [], []
    for i in indices:
        image, objects = render_objects(i, image_size, seed)
        c, e = crop_objects(image, [o[0] for o in objects])
        crops.append(c)
        extent.append(e)
        labels += [o[1] for o in objects]
        crowd += [o[2] for o in objects]
        image_index += [i] * len(objects)
        if keep_masks:
            masks += [torch.from_numpy(o[0]) for o in objects]
    return ObjectCrops(torch.cat(crops), torch.tensor(labels), torch.cat(extent),
                       torch.tensor(image_index), torch.tensor(crowd, dtype=torch.bool),
                       masks if keep_masks else None)


def _conv(cin: int, cout: int) -> List[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class ShapeClassifier(nn.Sequential):
    """(N, 4, CROP, CROP) crops -> (N, 5) class logits: six 3x3 conv-BN-ReLU layers
    (32, 32, 64, 64, 128, 128 channels, max-pool after each pair), global average pool, linear."""

    def __init__(self, width: int = 32):
        w = width
        super().__init__(*_conv(4, w), *_conv(w, w), nn.MaxPool2d(2),
                         *_conv(w, 2 * w), *_conv(2 * w, 2 * w), nn.MaxPool2d(2),
                         *_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 5))

    @staticmethod
    def normalize(crops: torch.Tensor) -> torch.Tensor:
        """RGB (0..255) to about zero mean and unit spread; the mask channel to [-1, 1]."""
        return torch.cat([(crops[:, :3] - 128.0) / 64.0, crops[:, 3:] * 2 - 1], 1)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random horizontal flip and a random multiple of 90 degrees, per batch (labels keep)."""
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, int(torch.randint(0, 4, (), generator=gen)), (-2, -1))


@torch.no_grad()
def predict_proba(model: nn.Module, crops: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """(N, 4, CROP, CROP) -> (N, 5) softmax probabilities (eval mode)."""
    model.eval()
    out = [model(ShapeClassifier.normalize(crops[i:i + batch])).softmax(-1)
           for i in range(0, len(crops), batch)]
    return torch.cat(out) if out else torch.zeros(0, 5)


def accuracy_by_extent(pred: torch.Tensor, objs: ObjectCrops) -> Dict[str, float]:
    """Accuracy (%) overall and per :data:`EXTENT_BINS` bin (``"<8"``, ``"8-16"``, ...), with
    the object count of each bin."""
    right = pred == objs.labels
    out = {"all": 100.0 * float(right.float().mean()), "n_all": len(right)}
    lo = 0
    for hi in EXTENT_BINS:
        sel = (objs.extent >= lo) & (objs.extent < hi)
        name = f"<{hi}" if lo == 0 else (f">={lo}" if hi == EXTENT_BINS[-1] else f"{lo}-{hi}")
        out[name] = 100.0 * float(right[sel].float().mean()) if sel.any() else float("nan")
        out[f"n_{name}"] = int(sel.sum())
        lo = hi
    return out


def train_classifier(train: ObjectCrops, held_out: ObjectCrops, epochs: int, batch: int = 128,
                     lr: float = 2e-3, seed: int = 0) -> Tuple[nn.Module, List[dict]]:
    """Train :class:`ShapeClassifier` (AdamW, cosine schedule) and return it with one record per
    epoch: ``{"epoch", "images_seen", "train_loss", "held_out": accuracy_by_extent(...)}``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ShapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(train.crops) + batch - 1) // batch)
    warm = max(steps // 20, 1)  # linear warm-up over 5% of the steps, then cosine to zero
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (t + 1) / warm if t < warm else
                                              0.5 * (1 + math.cos(math.pi * (t - warm)
                                                                  / max(steps - warm, 1))))
    n_images = len(torch.unique(train.image_index))
    curve = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train.crops), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x = _augment(ShapeClassifier.normalize(train.crops[idx]), gen)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        pred = predict_proba(model, held_out.crops).argmax(-1)
        curve.append({"epoch": epoch, "images_seen": epoch * n_images,
                      "train_loss": total / len(order),
                      "held_out": accuracy_by_extent(pred, held_out)})
        print(f"[identifiability] epoch {epoch}: loss {curve[-1]['train_loss']:.3f}, held-out "
              f"accuracy {curve[-1]['held_out']['all']:.1f}", flush=True)
    return model, curve


def confusion(pred: torch.Tensor, labels: torch.Tensor) -> List[List[int]]:
    """5 x 5 counts, rows = true class, columns = predicted class."""
    m = torch.zeros(5, 5, dtype=torch.int64)
    m.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    return m.tolist()


def decode_masks(objs: ObjectCrops, decoder: str, images: Sequence[int]
                 ) -> List[torch.Tensor | None]:
    """The visible masks of ``objs`` (kept) in the images ``images``, drawn by the
    mask-resolution ceiling's ``decoder`` ("exact" or "knet_loss", stride 8), fitted image by
    image: N (H, W) bool, None for the objects of other images."""
    from .mask_resolution_ceiling import oracle_masks

    out: List[torch.Tensor | None] = [None] * len(objs.masks)
    for i in images:
        sel = torch.nonzero(objs.image_index == i)[:, 0].tolist()
        if not sel:
            continue
        drawn = oracle_masks(torch.stack([objs.masks[k] for k in sel]), 8, decoder)
        for k, m in zip(sel, drawn):
            out[k] = m
    return out


def evaluate_map(dataset: str, objs: ObjectCrops, masks: List[torch.Tensor],
                 probs: torch.Tensor | None, output_dir: str, classes: str = "learned"
                 ) -> Dict[str, float]:
    """Mask AP (D2's COCOEvaluator, ``build_synthetic_evaluator``) on ``dataset`` (a val split
    whose image ``i`` holds the objects with ``objs.image_index == i``).

    Masks: ``masks`` (one per object, :func:`decode_masks`). ``classes``:

    * "true": the true class of every non-crowd thing at score 1 (distractors not predicted);
    * "true_iou": the same, scored by the IoU of the drawn mask with the object's visible mask
      (a confidence that ranks the predictions by their mask quality, the best ranking);
    * "learned": one prediction per non-crowd object (things and distractors) and thing class,
      scored with ``probs`` (N, 5)."""
    if classes not in ("true", "true_iou", "learned"):
        raise ValueError(f"classes must be true, true_iou or learned, got {classes!r}")
    from detectron2.data import DatasetCatalog

    from .synthetic_evaluators import build_synthetic_evaluator, mask_iou, mask_predictions

    evaluator = build_synthetic_evaluator(dataset, ("instance",), output_dir)
    evaluator.reset()
    for d in DatasetCatalog.get(dataset):
        h, w = d["height"], d["width"]
        sel = torch.nonzero((objs.image_index == d["image_id"]) & ~objs.crowd)[:, 0]
        if classes != "learned":
            sel = sel[objs.labels[sel] != DISTRACTOR]
        drawn = torch.stack([masks[k] for k in sel.tolist()]) if len(sel) else \
            torch.zeros(0, h, w, dtype=torch.bool)
        if classes == "learned":  # every (object, thing class) pair, as K-Net's top-k
            pred = mask_predictions((h, w), drawn.repeat_interleave(DISTRACTOR, 0),
                                    torch.arange(DISTRACTOR).repeat(len(sel)),
                                    probs[sel, :DISTRACTOR].reshape(-1))
        else:
            scores = torch.ones(len(sel))
            if classes == "true_iou" and len(sel):
                scores = mask_iou(drawn, torch.stack([objs.masks[k] for k in sel.tolist()]))
            pred = mask_predictions((h, w), drawn, objs.labels[sel], scores)
        evaluator.process([d], [{"instances": pred}])
    return {k: float(v) for k, v in evaluator.evaluate()["segm"].items()}


def _table(curve: List[dict], final: Dict[str, float], maps: Dict[str, Dict[str, float]]
           ) -> List[str]:
    """Two Markdown tables: held-out accuracy per epoch and extent bin (with the objects per
    bin), then mask AP of the val predictions with the per-class APs."""
    from .report import format_table, mask_ap_table

    bins = [k for k in curve[-1]["held_out"] if not k.startswith("n_") and k != "all"]
    rows = [[r["epoch"], r["images_seen"], *(r["held_out"][b] for b in ["all", *bins])]
            for r in curve]
    rows.append(["objects per bin", "", *(final[f"n_{b}"] for b in ["all", *bins])])
    things = [f"AP-{c}" for c in CLASS_NAMES[:DISTRACTOR]]
    return (format_table(["epoch", "images seen", "held-out accuracy", *bins], rows).splitlines()
            + [""] + mask_ap_table("val predictions", maps, ("AP", "AP50", "AP75", *things),
                                   ("mask AP", "AP50", "AP75", *things)))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="output/shape_identifiability")
    ap.add_argument("--num-train", type=int, default=2000, help="training images (the split's)")
    ap.add_argument("--num-eval", type=int, default=1000,
                    help="held-out images rendered like val (the first 60 are the val split)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dataset", default="knet_synth_instance_val",
                    help="the val split of the AP rows (its images must be 0.. of the val seed)")
    a = ap.parse_args(argv)
    from detectron2.data import DatasetCatalog

    import knet_d2  # noqa: F401  (registers the synthetic names)
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets
    from knet_d2.data.synthetic import split_default_seed

    from .cli import environment, run_header

    torch.set_num_threads(a.threads)
    header = run_header(list(sys.argv[1:] if argv is None else argv), __spec__.name, "cpu",
                        a.threads)
    ensure_synthetic_for_datasets([a.dataset])
    train = collect(range(a.num_train), a.image_size, split_default_seed("train"))
    held_out = collect(range(a.num_eval), a.image_size, split_default_seed("val"),
                       keep_masks=True)
    print(f"[identifiability] {len(train.labels)} training objects, {len(held_out.labels)} "
          "held-out objects", flush=True)
    model, curve = train_classifier(train, held_out, a.epochs)
    probs = predict_proba(model, held_out.crops)
    pred = probs.argmax(-1)
    final = curve[-1]["held_out"]  # the same model on the same objects
    out = Path(a.output)
    maps = {}
    val_images = [d["image_id"] for d in DatasetCatalog.get(a.dataset)]
    for decoder in ("exact", "knet_loss"):
        masks = decode_masks(held_out, decoder, val_images)
        for classes in ("true", "true_iou", "learned")[::2 if decoder == "exact" else 1]:
            maps[f"{decoder} masks, {ROW_NAMES[classes]}"] = evaluate_map(
                a.dataset, held_out, masks, probs, str(out / f"{decoder}_{classes}"), classes)
    table = _table(curve, final, maps)
    print("\n".join(environment(header) + table))
    out.mkdir(parents=True, exist_ok=True)
    result = {**header, "dataset": a.dataset, "image_size": a.image_size,
              "num_train_images": a.num_train, "num_eval_images": a.num_eval,
              "curve": curve, "final_accuracy": final,
              "confusion": {"classes": CLASS_NAMES, "rows_true_cols_pred": confusion(
                  pred, held_out.labels)},
              "mask_ap": maps, "table": table}
    path = out / "shape_identifiability.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"[identifiability] written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
