#!/usr/bin/env python
"""How much mask AP a stride-s mask head can reach on a split at all: the resolution ceiling.

K-Net predicts masks at stride 8 (upsampled x2 to stride 4, then to the image size). On the
synthetic set (128 px images, shapes from 4 px), is that grid too coarse for mask AP 50?
This script scores "oracle" predictions that are right about everything except resolution:
every non-crowd ground-truth instance, its true class, and a mask decoded from a
stride-``s`` grid the way the model decodes its own (bilinear x2, bilinear to the image size,
threshold). D2's COCOEvaluator scores them like a model (``build_synthetic_evaluator``), twice:
all at score 1 (ties: the evaluator ranks good and poor masks in arbitrary order, which
understates the ceiling), and each scored by its drawn mask's IoU with the ground truth
(``*_iou_scored``: the best ranking, the ceiling proper).

The grids:

* ``soft``: the ground truth averaged over each s x s cell (the soft target a perfect head
  trained on downsampled masks would predict), probability > 0.5;
* ``knet_loss`` (stride 8 only): a free logit per cell fitted per instance to K-Net's own mask
  losses (BCE and K-Net's dice, weighted by the default ``MODEL.KNET.MASK_WEIGHT`` and
  ``DICE_WEIGHT``, of the grid upsampled to stride
  ``MODEL.KNET.MASK_ASSIGN_STRIDE`` (4) against the ground truth downsampled to that stride, as
  in training), logit > 0: the masks a perfectly trained K-Net would draw.
  ``knet_loss_assign2`` / ``knet_loss_assign1``: the same with MASK_ASSIGN_STRIDE 2 / 1 (the
  model then upsamples its masks x4 / x8 before the losses and the output);
* ``fitted``: a free logit per cell, fitted per instance (Adam on BCE + dice against the
  full-resolution mask), logit > 0: the best such a grid can draw, a true upper bound for
  the decoder.

``exact`` (the ground truth itself) checks the path: it must score AP 100.

    python -m benchmarks.mask_resolution_ceiling --output output/mask_ceiling
    # the same val scenes rendered with a 256 px side (generated under --root on first use)
    python -m benchmarks.mask_resolution_ceiling --image-size 256 --output output/mask_ceiling_256
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "knet_mask_loss_weights", "decode_grid", "soft_grid", "fit_grid", "fit_knet_loss_grid",
    "oracle_masks", "evaluate_ceiling", "main",
]

#: (decoder, stride) pairs scored by default, after ("exact", 1).
VARIANTS = (("soft", 8), ("knet_loss", 8), ("knet_loss_assign2", 8), ("knet_loss_assign1", 8),
            ("fitted", 8), ("soft", 4), ("fitted", 4))
#: K-Net-loss decoders -> their MODEL.KNET.MASK_ASSIGN_STRIDE.
KNET_LOSS_ASSIGN_STRIDES = {"knet_loss": 4, "knet_loss_assign2": 2, "knet_loss_assign1": 1}


@functools.cache
def knet_mask_loss_weights() -> Tuple[float, float]:
    """``(MODEL.KNET.MASK_WEIGHT, MODEL.KNET.DICE_WEIGHT)`` of K-Net's default config (built
    once, not once per image)."""
    from detectron2.config import get_cfg

    from knet_d2.config import add_knet_config

    cfg = get_cfg()
    add_knet_config(cfg)
    return float(cfg.MODEL.KNET.MASK_WEIGHT), float(cfg.MODEL.KNET.DICE_WEIGHT)


def decode_grid(logits: torch.Tensor, size: Tuple[int, int], up: int = 2) -> torch.Tensor:
    """(N, 1, h, w) stride-s logits -> (N, 1, H, W) logits at the image size, as K-Net decodes
    its masks: bilinear x``up`` (to the assign stride; 2 = stride 4), then bilinear to ``size``
    (align_corners=False)."""
    x = F.interpolate(logits, scale_factor=up, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def soft_grid(masks: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, 1, H, W) {0, 1} masks -> (N, 1, H/s, W/s) logits of their per-cell mean (clamped
    to [1e-4, 1 - 1e-4]); H and W must be multiples of ``stride``."""
    mean = F.avg_pool2d(masks.float(), stride, stride)
    return torch.logit(mean.clamp(1e-4, 1 - 1e-4))


def _fit_logits(init: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor],
                steps: int, lr: float) -> torch.Tensor:
    """``init`` logits after ``steps`` Adam steps (learning rate ``lr``) on ``loss_of(logits)``."""
    logits = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        loss = loss_of(logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return logits.detach()


def fit_grid(masks: torch.Tensor, stride: int, steps: int = 400, lr: float = 0.1) -> torch.Tensor:
    """(N, 1, H, W) {0, 1} masks -> (N, 1, H/s, W/s) logits fitted so that
    :func:`decode_grid` of them matches each mask (BCE + dice, Adam, from :func:`soft_grid`)."""
    target = masks.float()

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        out = decode_grid(logits, target.shape[-2:]) * 4.0  # sharper sigmoid, same zero set
        prob = out.sigmoid()
        inter = (prob * target).sum((1, 2, 3))
        dice = 1 - (2 * inter + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
        return F.binary_cross_entropy_with_logits(out, target) + dice.mean()

    return _fit_logits(soft_grid(masks, stride), loss_of, steps, lr)


def fit_knet_loss_grid(masks: torch.Tensor, stride: int = 8, assign_stride: int = 4,
                       steps: int = 400, lr: float = 0.1) -> torch.Tensor:
    """(N, 1, H, W) {0, 1} masks -> (N, 1, H/s, W/s) logits that minimise K-Net's training mask
    losses (:func:`knet_mask_loss_weights`): BCE + dice of the grid upsampled x(s / assign_stride)
    against the masks downsampled to ``assign_stride``
    (``knet_d2.knet_model.downsample_masks``)."""
    from knet_d2.knet_model import downsample_masks
    from knet_d2.modeling.criterion import dice_loss

    h, w = masks.shape[-2:]
    target = downsample_masks(masks[:, 0], (h // assign_stride, w // assign_stride))
    up = stride // assign_stride
    mask_weight, dice_weight = knet_mask_loss_weights()

    def loss_of(logits: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(logits, scale_factor=up, mode="bilinear", align_corners=False)[:, 0]
        return (mask_weight * F.binary_cross_entropy_with_logits(out, target)
                + dice_weight * dice_loss(out, target).mean())

    return _fit_logits(soft_grid(masks, stride), loss_of, steps, lr)


def oracle_masks(masks: torch.Tensor, stride: int, decoder: str) -> torch.Tensor:
    """(N, H, W) bool ground-truth masks -> (N, H, W) bool masks drawn from a stride-``stride``
    grid by ``decoder`` ("exact", "soft", "fitted" or a :data:`KNET_LOSS_ASSIGN_STRIDES` key;
    module docstring)."""
    if decoder == "exact" or len(masks) == 0:
        return masks.clone()
    x = masks[:, None]
    if decoder == "soft":
        return (decode_grid(soft_grid(x, stride), masks.shape[-2:]) > 0)[:, 0]
    if decoder in KNET_LOSS_ASSIGN_STRIDES:
        assign = KNET_LOSS_ASSIGN_STRIDES[decoder]
        grid = fit_knet_loss_grid(x, stride, assign)
        return (decode_grid(grid, masks.shape[-2:], stride // assign) > 0)[:, 0]
    if decoder == "fitted":
        return (decode_grid(fit_grid(x, stride), masks.shape[-2:]) > 0)[:, 0]
    raise ValueError(f"unknown decoder {decoder!r}; expected exact, soft, fitted or one of "
                     f"{sorted(KNET_LOSS_ASSIGN_STRIDES)}")


def _ground_truth(d: dict):
    """The non-crowd instances of a dataset dict as D2 ``Instances`` with bitmasks."""
    from detectron2.data.detection_utils import annotations_to_instances

    annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
    return annotations_to_instances(annos, (d["height"], d["width"]), mask_format="bitmask")


def evaluate_ceiling(dataset: str, variants: Sequence[Tuple[str, int]], output_dir: str
                     ) -> Dict[str, Dict[str, float]]:
    """Mask AP (D2's COCOEvaluator) of the oracle predictions of every ``(decoder, stride)``
    in ``variants`` on ``dataset``, scored two ways: every prediction at score 1
    (``"<decoder>_s<stride>"``; ties, so good and poor masks rank in arbitrary order) and every
    prediction scored by the IoU of its drawn mask with its ground truth
    (``"<decoder>_s<stride>_iou_scored"``; the best ranking, as a model whose confidence
    tracks its mask quality). Returns ``{name: segm results}``."""
    from detectron2.data import DatasetCatalog

    from benchmarks.synthetic_evaluators import (
        build_synthetic_evaluator,
        mask_iou,
        mask_predictions,
    )

    dicts = DatasetCatalog.get(dataset)
    gts = [_ground_truth(d) for d in dicts]
    results = {}
    for decoder, stride in variants:
        names = (f"{decoder}_s{stride}", f"{decoder}_s{stride}_iou_scored")
        evaluators = [build_synthetic_evaluator(dataset, ("instance",), str(Path(output_dir) / n))
                      for n in names]
        for evaluator in evaluators:
            evaluator.reset()
        for d, gt in zip(dicts, gts):
            h, w = d["height"], d["width"]
            exact = gt.gt_masks.tensor
            masks = oracle_masks(exact, stride, decoder)
            for evaluator, scores in zip(evaluators,
                                         (torch.ones(len(masks)), mask_iou(masks, exact))):
                pred = mask_predictions((h, w), masks, gt.gt_classes.clone(), scores)
                evaluator.process([d], [{"instances": pred}])
        for name, evaluator in zip(names, evaluators):
            results[name] = {k: float(v) for k, v in evaluator.evaluate()["segm"].items()}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="knet_synth_instance_val")
    ap.add_argument("--output", default="output/mask_ceiling")
    ap.add_argument("--image-size", type=int, default=None,
                    help="score a synthetic val split rendered at this side instead of --dataset")
    ap.add_argument("--num-images", type=int, default=60, help="with --image-size")
    ap.add_argument("--root", default=os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"),
                                                   "knet_synth_sizes"),
                    help="with --image-size: the split is generated under ROOT/<size>px")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    from detectron2.data import DatasetCatalog

    import knet_d2  # noqa: F401  (registers the synthetic names)
    from knet_d2.data.datasets.register_synthetic import (
        ensure_synthetic_for_datasets,
        register_synthetic_datasets,
    )

    from .cli import environment, run_header
    from .report import mask_ap_table

    torch.set_num_threads(a.threads)
    header = run_header(list(sys.argv[1:] if argv is None else argv), __spec__.name, "cpu",
                        a.threads)
    if a.image_size is not None:
        prefix = f"knet_synth_{a.image_size}px"
        a.dataset = f"{prefix}_instance_val"
        if a.dataset not in DatasetCatalog.list():
            register_synthetic_datasets(Path(a.root) / f"{a.image_size}px",
                                        {"val": a.num_images}, a.image_size, prefix)
    ensure_synthetic_for_datasets([a.dataset])
    variants = [("exact", 1), *VARIANTS]
    results = evaluate_ceiling(a.dataset, variants, a.output)
    table = mask_ap_table("oracle masks", results)
    print("\n".join(environment(header) + table))
    Path(a.output).mkdir(parents=True, exist_ok=True)
    path = Path(a.output) / "mask_ceiling.json"
    path.write_text(json.dumps({**header, "dataset": a.dataset,
                                "image_size": a.image_size, "results": results,
                                "table": table}, indent=2))
    print(f"[mask ceiling] written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
