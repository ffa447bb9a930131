#!/usr/bin/env python
"""Where a trained instance K-Net loses mask AP: its classes, or its masks?

Runs a trained model on a val split and scores, with D2's COCOEvaluator
(``build_synthetic_evaluator``), its predictions three ways:

* ``as predicted``: the model's own output (top-k over kernels x classes);
* ``classes from the ground truth``: one prediction per kernel (its mask and its best score),
  the class replaced by that of the non-crowd ground-truth instance its mask overlaps most
  (IoU > 0; otherwise the model's class). What the same masks and scores would score with a
  perfect classifier;
* ``masks from the ground truth``: every prediction keeps its class and score, its mask
  replaced by the ground-truth mask it overlaps most (IoU > 0; otherwise kept). What the same
  classes and scores would score with perfect mask drawing.

It also counts how many non-crowd ground-truth instances some kernel's mask covers at IoU
>= 0.5 and >= 0.75, whatever its class and score (mask recall).

    python -m benchmarks.instance_error_breakdown \\
        --config-file configs/synthetic/instance/knet_R18_tiny.yaml \\
        --weights output/synthetic_instance_knet_R18_tiny/model_final.pth --output OUT
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

from .trained_checkpoint import add_checkpoint_args, load_checkpoint_model

__all__ = ["kernel_predictions", "relabel_from_ground_truth", "remask_from_ground_truth",
           "mask_recall", "breakdown", "main"]


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(P, H, W) and (G, H, W) bool -> (P, G) mask IoU."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.T
    return inter / (a.sum(1)[:, None] + b.sum(1)[None] - inter).clamp(min=1)


def kernel_predictions(pred) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct masks of an ``Instances`` output (one per kernel: a kernel's predictions
    share one mask), each with its best score and that prediction's class:
    ``(masks (M, H, W) bool, scores (M,), classes (M,))``."""
    best: Dict[bytes, int] = {}
    for k in pred.scores.argsort(descending=True, stable=True).tolist():  # best score first
        best.setdefault(pred.pred_masks[k].numpy().tobytes(), k)
    idx = torch.tensor(sorted(best.values()), dtype=torch.int64)
    return pred.pred_masks[idx], pred.scores[idx], pred.pred_classes[idx]


def relabel_from_ground_truth(pred, gt_masks: torch.Tensor, gt_classes: torch.Tensor):
    """One prediction per kernel, its class that of the ground truth it overlaps most."""
    from .synthetic_evaluators import mask_predictions

    masks, scores, classes = kernel_predictions(pred)
    if len(gt_masks) and len(masks):
        iou = _iou(masks, gt_masks)
        best_iou, best = iou.max(1)
        classes = torch.where(best_iou > 0, gt_classes[best], classes)
    return mask_predictions(pred.image_size, masks, classes, scores)


def remask_from_ground_truth(pred, gt_masks: torch.Tensor):
    """Every prediction, its mask replaced by the ground truth it overlaps most."""
    from .synthetic_evaluators import mask_predictions

    masks = pred.pred_masks.clone()
    if len(gt_masks) and len(masks):
        best_iou, best = _iou(masks, gt_masks).max(1)
        masks[best_iou > 0] = gt_masks[best[best_iou > 0]]
    return mask_predictions(pred.image_size, masks, pred.pred_classes, pred.scores)


def mask_recall(pred, gt_masks: torch.Tensor, thresholds=(0.5, 0.75)) -> List[int]:
    """How many of ``gt_masks`` some predicted mask covers at IoU >= each threshold."""
    if not len(gt_masks):
        return [0 for _ in thresholds]
    if not len(pred):
        return [0 for _ in thresholds]
    best = _iou(kernel_predictions(pred)[0], gt_masks).max(0).values
    return [int((best >= t).sum()) for t in thresholds]


def breakdown(model, loader, dataset: str, output_dir: str) -> dict:
    """Run ``model`` on ``loader`` (the test loader of ``dataset``) and score the three views."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import annotations_to_instances

    from .synthetic_evaluators import build_synthetic_evaluator

    # the ground truth from the catalog: the test loader's mapper drops the annotations
    gts = {}
    for d in DatasetCatalog.get(dataset):
        annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        gt = annotations_to_instances(annos, (d["height"], d["width"]), mask_format="bitmask")
        gts[d["image_id"]] = (gt.gt_masks.tensor, gt.gt_classes)

    views = ("as predicted", "classes from the ground truth", "masks from the ground truth")
    evaluators = {v: build_synthetic_evaluator(dataset, ("instance",),
                                               str(Path(output_dir) / v.replace(" ", "_")))
                  for v in views}
    for e in evaluators.values():
        e.reset()
    found, total = [0, 0], 0
    model.eval()
    with torch.no_grad():
        for inputs in loader:
            outputs = model(inputs)
            for d, out in zip(inputs, outputs):
                pred = out["instances"].to("cpu")
                gt_masks, gt_classes = gts[d["image_id"]]
                evaluators[views[0]].process([d], [{"instances": pred}])
                evaluators[views[1]].process(
                    [d], [{"instances": relabel_from_ground_truth(pred, gt_masks, gt_classes)}])
                evaluators[views[2]].process(
                    [d], [{"instances": remask_from_ground_truth(pred, gt_masks)}])
                found = [f + n for f, n in zip(found, mask_recall(pred, gt_masks))]
                total += len(gt_masks)
    segm = {v: {k: float(x) for k, x in e.evaluate()["segm"].items()}
            for v, e in evaluators.items()}
    return {"mask_ap": segm, "mask_recall": {"iou>=0.5": 100.0 * found[0] / max(total, 1),
                                             "iou>=0.75": 100.0 * found[1] / max(total, 1),
                                             "instances": total}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_checkpoint_args(ap, "output/instance_error_breakdown")
    a = ap.parse_args(argv)
    from train_net import Trainer

    from .cli import environment, run_header
    from .report import mask_ap_table

    header = run_header(list(sys.argv[1:] if argv is None else argv), __spec__.name, "cpu",
                        a.threads)
    cfg, model, dataset = load_checkpoint_model(a)
    result = breakdown(model, Trainer.build_test_loader(cfg, dataset), dataset, a.output)
    lines = mask_ap_table("predictions", result["mask_ap"])
    rec = result["mask_recall"]
    lines.append(f"mask recall (any class, any score): IoU>=0.5 {rec['iou>=0.5']:.1f}%, "
                 f"IoU>=0.75 {rec['iou>=0.75']:.1f}% of {rec['instances']} instances")
    print("\n".join(environment(header) + lines))
    Path(a.output).mkdir(parents=True, exist_ok=True)
    path = Path(a.output) / "instance_error_breakdown.json"
    path.write_text(json.dumps({**header, "dataset": dataset, "weights": a.weights, **result,
                                "table": lines}, indent=2))
    print(f"[breakdown] written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
