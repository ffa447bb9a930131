#!/usr/bin/env python
"""Where a trained panoptic K-Net loses its things: objects never segmented, or segmented with
the wrong class?

Runs a trained model on a panoptic split and compares, image by image, its thing segments with
the ground-truth thing segments (not crowd) as PQ (panopticapi) matches them: IoU > 0.5, the
union without the predicted pixels on void or crowd ground truth, at most one match per
segment; an unmatched prediction lying more than half on void or crowd is not counted.

* ground-truth things **found** (some predicted thing segment covers it at IoU > 0.5, whatever
  its class) and **found with their class**, by visible extent (the longer side of the visible
  pixels' bounding box, in bins of pixels);
* predicted thing segments: **true** (matched, same class), **wrong class** (matched, other
  class), **unmatched** (no ground-truth thing at IoU > 0.5); the unmatched ones by where they
  lie: **mostly off the things** (at most half of their pixels, void and crowd left out, on
  ground-truth things: on stuff or on the unlabeled distractor shapes, whose pixels carry the
  stuff label), else on the thing they cover most, which is **found** by another segment (a
  duplicate) or **not found** (a poor or merged mask of it).

With ``TP`` = true, ``FP`` = wrong class + unmatched and ``FN`` = ground truth not found with its
class, ``TP / (TP + FP / 2 + FN / 2)`` is PQ's recognition quality pooled over the classes
(PQ averages it per class, so RQ_th differs a little). The same figure with every found thing
given its class is what the model's segments would reach with a perfect classifier.

    python -m benchmarks.panoptic_error_breakdown \\
        --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \\
        --weights RUN/model_final.pth --output OUT
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .trained_checkpoint import add_checkpoint_args, load_checkpoint_model

__all__ = ["EXTENT_BINS", "segment_masks", "thing_overlaps", "thing_iou", "visible_extent",
           "count_image", "summarize", "main"]

EXTENT_BINS = (0, 8, 16, 32)  # px; the last bin is open


def segment_masks(ids_map: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """(K, H*W) bool masks of the segments ``ids`` of an (H, W) id map."""
    if not len(ids):
        return np.zeros((0, ids_map.size), bool)
    return np.stack([ids_map == i for i in ids]).reshape(len(ids), -1)


def thing_overlaps(gt_masks: np.ndarray, pred_masks: np.ndarray, ignore: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """(G, P) shared pixels and PQ's IoU between (G, H*W) and (P, H*W) bool masks
    (:func:`segment_masks`): the union leaves out predicted pixels where ``ignore`` (H*W,) bool
    (void or crowd ground truth) is set."""
    g, p = gt_masks.astype(np.float64), pred_masks.astype(np.float64)
    inter = g @ p.T
    p_ignored = p @ ignore.astype(np.float64)
    union = g.sum(1)[:, None] + (p.sum(1) - p_ignored)[None] - inter
    return inter, inter / np.maximum(union, 1)


def thing_iou(gt_masks: np.ndarray, pred_masks: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """(G, P) PQ's IoU of :func:`thing_overlaps`."""
    return thing_overlaps(gt_masks, pred_masks, ignore)[1]


def visible_extent(mask: np.ndarray) -> int:
    """Longer side of the bounding box of a (H, W) bool mask's pixels; 0 when empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0
    return int(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))


def count_image(gt: np.ndarray, gt_things: List[dict], pred: np.ndarray,
                pred_things: List[dict], ignore: np.ndarray) -> Dict[str, np.ndarray]:
    """Counts of one image. ``*_things``: segments_info entries (``id``, ``category_id``) of
    the thing segments only (ground truth: not crowd); ``ignore``: (H, W) bool, void or crowd
    ground truth. Returns per extent bin ``total``, ``found``, ``found_same_class`` (each
    ``len(EXTENT_BINS)`` ints), ``pred`` = [true, wrong class, unmatched] and ``unmatched`` =
    [on a found thing, on a thing not found, mostly off the things] (module docstring)."""
    g = segment_masks(gt, [s["id"] for s in gt_things])
    p = segment_masks(pred, [s["id"] for s in pred_things])
    ignore = ignore.reshape(-1)
    inter, iou = thing_overlaps(g, p, ignore)  # (G, P) shared pixels, IoU
    ignored = (p & ignore).sum(1)
    mostly_ignored = ignored > 0.5 * p.sum(1)
    match = iou > 0.5  # PQ's rule: at most one match per row and column
    nb = len(EXTENT_BINS)
    out = {k: np.zeros(nb, np.int64) for k in ("total", "found", "found_same_class")}
    out["pred"] = np.zeros(3, np.int64)
    out["unmatched"] = np.zeros(3, np.int64)
    found = match.any(1)
    on_things = inter.sum(0)  # ground-truth things do not overlap
    counted = p.sum(1) - ignored
    for i, thing in enumerate(gt_things):
        extent = visible_extent(g[i].reshape(gt.shape))
        b = int(np.searchsorted(EXTENT_BINS, extent, side="right")) - 1
        out["total"][b] += 1
        js = np.nonzero(match[i])[0]
        out["found"][b] += found[i]
        out["found_same_class"][b] += any(
            pred_things[j]["category_id"] == thing["category_id"] for j in js)
    for j, seg in enumerate(pred_things):
        is_ = np.nonzero(match[:, j])[0]
        if len(is_) == 0:
            if mostly_ignored[j]:
                continue
            out["pred"][2] += 1
            if on_things[j] <= 0.5 * counted[j]:
                out["unmatched"][2] += 1
            else:
                out["unmatched"][0 if found[int(np.argmax(inter[:, j]))] else 1] += 1
        elif gt_things[is_[0]]["category_id"] == seg["category_id"]:
            out["pred"][0] += 1
        else:
            out["pred"][1] += 1
    return out


def summarize(counts: Dict[str, np.ndarray]) -> dict:
    """Percentages and the pooled recognition quality (module docstring) of summed counts."""
    total, found, same = (counts[k].sum() for k in ("total", "found", "found_same_class"))
    tp, wrong, unmatched = (int(x) for x in counts["pred"])
    fn = int(total - same)

    def rq(tp_: int, fp_: int, fn_: int) -> float:
        return 100.0 * tp_ / max(tp_ + fp_ / 2 + fn_ / 2, 1e-9)

    bins = [f">={lo}px" if i == len(EXTENT_BINS) - 1 else f"{lo}-{EXTENT_BINS[i + 1]}px"
            for i, lo in enumerate(EXTENT_BINS)]
    return {
        "extent_bins": bins,
        "gt_things": counts["total"].tolist(),
        "found": counts["found"].tolist(),
        "found_same_class": counts["found_same_class"].tolist(),
        "pred_things": {"true": tp, "wrong_class": wrong, "unmatched": unmatched},
        "unmatched_where": dict(zip(
            ("on_a_found_thing", "on_a_thing_not_found", "mostly_off_the_things"),
            (int(x) for x in counts["unmatched"]))),
        "found_pct": 100.0 * found / max(total, 1),
        "found_same_class_pct": 100.0 * same / max(total, 1),
        "wrong_class_pct_of_matched": 100.0 * wrong / max(tp + wrong, 1),
        "pooled_rq": rq(tp, wrong + unmatched, fn),
        "pooled_rq_perfect_classes": rq(tp + wrong, unmatched, int(total - found)),
    }


def breakdown(model, loader, dataset: str) -> dict:
    """Run ``model`` on ``loader`` (the test loader of panoptic ``dataset``) and count."""
    from detectron2.data import DatasetCatalog
    from detectron2.utils.file_io import PathManager
    from panopticapi.utils import rgb2id
    from PIL import Image

    dicts = {d["image_id"]: d for d in DatasetCatalog.get(dataset)}
    counts: Dict[str, np.ndarray] = {}
    model.eval()
    with torch.no_grad():
        for inputs in loader:
            for d, out in zip(inputs, model(inputs)):
                ref = dicts[d["image_id"]]
                with PathManager.open(ref["pan_seg_file_name"], "rb") as f:
                    gt = rgb2id(np.asarray(Image.open(f).convert("RGB"), dtype=np.uint32))
                seg, info = out["panoptic_seg"]
                segs = ref["segments_info"]
                gt_things = [s for s in segs if s["isthing"] and not s.get("iscrowd", 0)]
                ignore = gt == 0  # panopticapi's VOID id
                for s in segs:
                    if s.get("iscrowd", 0):
                        ignore |= gt == s["id"]
                c = count_image(gt, gt_things, seg.cpu().numpy(),
                                [s for s in info if s["isthing"]], ignore)
                counts = {k: counts.get(k, 0) + v for k, v in c.items()}
    return summarize(counts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_checkpoint_args(ap, "output/panoptic_error_breakdown")
    a = ap.parse_args(argv)
    path = Path(a.output) / "panoptic_error_breakdown.json"
    if path.exists():
        ap.error(f"{path} exists; choose another --output")
    if not Path(a.weights).is_file():
        ap.error(f"--weights: no such file: {a.weights}")
    from train_net import Trainer

    from .cli import environment, run_header, write_json

    header = run_header(list(sys.argv[1:] if argv is None else argv), __spec__.name, "cpu",
                        a.threads)
    cfg, model, dataset = load_checkpoint_model(a, [
        "MODEL.KNET.TEST.PANOPTIC_ON", "True", "MODEL.KNET.TEST.INSTANCE_ON", "False",
        "MODEL.KNET.TEST.SEMANTIC_ON", "False"])
    res = breakdown(model, Trainer.build_test_loader(cfg, dataset), dataset)
    lines = [f"{'visible extent':<16}" + "".join(f"{b:>10}" for b in res["extent_bins"])]
    for key in ("gt_things", "found", "found_same_class"):
        lines.append(f"{key:<16}" + "".join(f"{n:>10}" for n in res[key]))
    p = res["pred_things"]
    lines += [
        f"predicted things: {p['true']} true, {p['wrong_class']} wrong class, "
        f"{p['unmatched']} unmatched ({res['wrong_class_pct_of_matched']:.1f}% of the matched "
        "ones have the wrong class)",
        "unmatched: {on_a_found_thing} on a found thing, {on_a_thing_not_found} on a thing not "
        "found, {mostly_off_the_things} mostly off the things".format(**res["unmatched_where"]),
        f"found {res['found_pct']:.1f}%, with their class {res['found_same_class_pct']:.1f}%; "
        f"pooled RQ {res['pooled_rq']:.1f}, with perfect classes "
        f"{res['pooled_rq_perfect_classes']:.1f}",
    ]
    print("\n".join(environment(header) + lines))
    write_json(path, {**header, "dataset": dataset, "weights": a.weights,
                      "config_file": a.config_file, **res, "table": lines})
    print(f"[breakdown] written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
