#!/usr/bin/env python
"""Does K-Net learn on real photographs? Fit K-Net R50 to a handful of real COCO images on the
CPU and evaluate it on the same images with Detectron2's evaluators.

    python -m benchmarks.fit_real_images --output output/fit_real            # both tasks
    python -m benchmarks.fit_real_images --tasks instance --iters 150 --threads 2
    python -m benchmarks.fit_real_images --iters 2 --eval-period 1 --min-size 128 --no-val  # smoke

Tasks (data under ``--data-root``, see :mod:`benchmarks.cli`):

* ``instance``: the first ``--num-images`` (8) images of ``coco_tiny/train2017`` (by file name;
  the last one swapped for the first image with a crowd region if none has one), all 80 COCO
  categories, crowd regions kept (ignored by the loss and by COCOEvaluator, as in COCO).
  Config ``configs/custom/knet_R50_cpu_small.yaml`` (the CPU starter config). Target: mask AP
  >= 50 on those images (D2's ``COCOEvaluator``). Afterwards the same model is evaluated on the
  80 ``coco_tiny/val2017`` images (``--no-val`` skips it): without pretrained weights and 8
  training images this is expected to be near zero; it is recorded as it is.
* ``panoptic``: the 2 images of ``coco_panoptic_sample`` with their COCO panoptic ground truth
  (133 categories: 80 things, 53 stuff). Config
  ``configs/coco/panoptic-segmentation/knet_R50_1x.yaml``. Target: PQ >= 70 on those images
  (D2's ``COCOPanopticEvaluator``).

Both train at a short side of ``--min-size`` (long side 5/3 of it, no flip), batch 2, for
``--iters`` iterations, evaluated every ``--eval-period``, and should finish within
``--time-budget`` (900 s) of training each. Unset, these three come from :data:`RECIPES`, the
per-task recipes measured to fit the budget (benchmarks/RESULTS.md).
Without ``--weights`` the models start from scratch (no download is possible here): the
ResNet-50 then trains with GroupNorm and nothing frozen, at full learning rate (FrozenBN and a
frozen stem are for ImageNet weights). With ``--weights`` the configs run unchanged from them.

Writes, per task, under ``--output/<task>``: the training run (``metrics.json``, checkpoint,
log), ``plots/losses.png`` and ``plots/eval_metrics.png`` (``tools/plot_metrics.py``; the model
is evaluated every ``--eval-period`` iterations) and ``data/`` (the image subset's JSON); and
``--output/fit_real_images.json``: the run header (date, commit, machine, command) and, per
task, the metrics, the per-iteration total loss, the times and whether the targets were met.
An existing ``fit_real_images.json`` is not overwritten unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .bench_lock import run_locked
from .cli import default_data_root, run_header
from .train_synthetic import results_as_floats, train_timed

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = "fit_real_images.json"
TIME_BUDGET_S = 900.0

#: task -> (config, metric group, metric key, target)
TASKS = {
    "instance": ("configs/custom/knet_R50_cpu_small.yaml", "segm", "AP", 50.0),
    "panoptic": ("configs/coco/panoptic-segmentation/knet_R50_1x.yaml", "panoptic_seg", "PQ",
                 70.0),
}
#: task -> default (short side, iterations, evaluation period): each fits the 900 s budget on
#: 2 cores (benchmarks/RESULTS.md, "K-Net on real photographs")
RECIPES = {"instance": (160, 1100, 220), "panoptic": (256, 450, 90)}
TRAIN_NAME = {"instance": "fit_real_coco_tiny_train", "panoptic": "fit_real_coco_panoptic_sample"}
VAL_NAME = "fit_real_coco_tiny_val80"


# ------------------------------------------------------------------------------------- data
def coco_tiny_subset(data_root: Path, num_images: int, out_json: Path) -> List[str]:
    """Write a COCO instance JSON of the first ``num_images`` coco_tiny train images (by file
    name; at least one with a crowd region) to ``out_json``; returns their file names."""
    src = data_root / "coco_tiny" / "annotations" / "instances_train2017.json"
    data = json.loads(src.read_text())
    images = sorted(data["images"], key=lambda im: im["file_name"])
    crowd_ids = {a["image_id"] for a in data["annotations"] if a.get("iscrowd")}
    keep = images[:num_images]
    if crowd_ids and not any(im["id"] in crowd_ids for im in keep):
        keep[-1] = next(im for im in images if im["id"] in crowd_ids)
    ids = {im["id"] for im in keep}
    subset = dict(data, images=keep,
                  annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(subset))
    return [im["file_name"] for im in keep]


def _fresh(name: str) -> None:
    """Forget an earlier registration of one of this script's own names (same process)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_task_data(task: str, data_root: Path, task_out: Path, num_images: int) -> dict:
    """Register the training images of ``task`` (and, for instance, the 80 val images);
    returns ``{"train": name, "val": name or None, "images": [file names]}``."""
    from knet_d2.data.datasets.register_custom import (
        register_instance_dataset,
        register_panoptic_dataset,
    )

    for name in (TRAIN_NAME[task], VAL_NAME):
        _fresh(name)
    if task == "instance":
        tiny = data_root / "coco_tiny"
        subset = task_out / "data" / f"instances_train2017_first{num_images}.json"
        files = coco_tiny_subset(data_root, num_images, subset)
        register_instance_dataset(TRAIN_NAME[task], subset, tiny / "train2017")
        register_instance_dataset(VAL_NAME, tiny / "annotations" / "instances_val2017.json",
                                  tiny / "val2017")
        return {"train": TRAIN_NAME[task], "val": VAL_NAME, "images": files}
    pan = data_root / "coco_panoptic_sample"
    register_panoptic_dataset(TRAIN_NAME[task], pan / "input_images", pan / "panoptic_examples",
                              pan / "panoptic_examples.json")
    files = sorted(p.name for p in (pan / "input_images").glob("*.jpg"))
    return {"train": TRAIN_NAME[task], "val": None, "images": files}


# ------------------------------------------------------------------------------------ config
def task_opts(task: str, train_name: str, args: argparse.Namespace, output: Path) -> List[str]:
    """Config overrides of one fitting run (see the module docstring)."""
    max_size = (args.min_size * 5) // 3
    opts = [
        "OUTPUT_DIR", str(output), "OUTPUT_OVERWRITE", str(bool(args.overwrite)),
        "MODEL.DEVICE", "cpu", "SEED", str(args.seed),
        "DATASETS.TRAIN", f"('{train_name}',)", "DATASETS.TEST", f"('{train_name}',)",
        "INPUT.MIN_SIZE_TRAIN", f"({args.min_size},)", "INPUT.MAX_SIZE_TRAIN", str(max_size),
        "INPUT.MIN_SIZE_TEST", str(args.min_size), "INPUT.MAX_SIZE_TEST", str(max_size),
        "INPUT.RANDOM_FLIP", "none", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "False",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", str(args.lr),
        "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({max(args.iters * 4 // 5, 1)},)",
        "SOLVER.WARMUP_ITERS", str(min(args.warmup, max(args.iters - 1, 0))),
        "SOLVER.CHECKPOINT_PERIOD", str(args.iters), "TEST.EVAL_PERIOD", str(args.eval_period),
        "MODEL.WEIGHTS", args.weights or "",
    ]
    if not args.weights:  # from scratch: a normalisation that trains, nothing frozen
        opts += ["MODEL.RESNETS.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", "0",
                 "SOLVER.BACKBONE_MULTIPLIER", "1.0"]
    return opts + list(args.opts)


# ----------------------------------------------------------------------------------- fitting
def fit(task: str, args: argparse.Namespace, argv: Sequence[str]) -> Dict[str, object]:
    """Train one task on its images, evaluate it on them (and instance on coco_tiny val), plot
    the curves; returns the task's record for the result JSON."""
    import torch

    import train_net

    args = with_task_recipe(task, args)
    config, group, key, target = TASKS[task]
    task_out = args.output / task
    data = register_task_data(task, args.data_root, task_out, args.num_images)
    cli = train_net.argument_parser().parse_args(
        ["--config-file", str(ROOT / config), *task_opts(task, data["train"], args, task_out)])
    cfg, trainer, train_s = train_timed(cli)
    losses = [float(v) for v, _ in trainer.storage.history("total_loss").values()]
    t1 = time.perf_counter()
    results = train_net.Trainer.test(cfg, trainer.model)
    eval_s = time.perf_counter() - t1
    value = float(results[group][key])
    record: Dict[str, object] = {
        "config": config, "images": data["images"], "iterations": cfg.SOLVER.MAX_ITER,
        "batch": cfg.SOLVER.IMS_PER_BATCH, "short_side": args.min_size,
        "weights": cfg.MODEL.WEIGHTS or "none (from scratch)",
        "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
        "metric": f"{group}/{key}", "value": round(value, 2), "target": target,
        "met_target": value >= target, "time_budget_s": args.time_budget,
        "within_time_budget": train_s <= args.time_budget,
        "results": results_as_floats(results), "total_loss": losses,
        "threads": torch.get_num_threads(),
    }
    if data["val"] is not None and args.val:
        val_cfg = cfg.clone()
        val_cfg.defrost()
        val_cfg.DATASETS.TEST = (data["val"],)
        val_cfg.OUTPUT_DIR = str(task_out / "val80")
        record["val80"] = results_as_floats(train_net.Trainer.test(val_cfg, trainer.model))
        record["val80_note"] = ("the 80 coco_tiny val images, never trained on: near zero is "
                                "expected from 8 training images without pretrained weights")
    record["plots"] = plot_curves(task_out)
    return record


def with_task_recipe(task: str, args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``min_size`` / ``iters`` / ``eval_period`` left unset on the command line
    taken from the task's :data:`RECIPES` entry."""
    filled = argparse.Namespace(**vars(args))
    for name, value in zip(("min_size", "iters", "eval_period"), RECIPES[task]):
        if getattr(filled, name) is None:
            setattr(filled, name, value)
    return filled


def plot_curves(run_dir: Path) -> List[str]:
    """``tools/plot_metrics.py run_dir``: the PNGs written under ``run_dir/plots``."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "plot_metrics.py"), str(run_dir),
                           "--smooth-window", "1"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"tools/plot_metrics.py {run_dir} failed: {proc.stderr.strip()}")
    return proc.stdout.split()


# -------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    p.add_argument("--output", type=Path, default=Path("output/fit_real"))
    p.add_argument("--data-root", type=Path, default=default_data_root(),
                   help="folder with coco_tiny/ and coco_panoptic_sample/ (see benchmarks.cli)")
    p.add_argument("--num-images", type=int, default=8, help="coco_tiny train images (instance)")
    p.add_argument("--iters", type=int, default=None,
                   help="training iterations (default: the task's RECIPES entry)")
    p.add_argument("--eval-period", type=int, default=None,
                   help="evaluate on the training images every N iterations (metric curves)")
    p.add_argument("--min-size", type=int, default=None,
                   help="short side, train and test (default: the task's RECIPES entry)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW base learning rate")
    p.add_argument("--warmup", type=int, default=20, help="linear warm-up iterations")
    p.add_argument("--weights", default="", help="initial weights (default: from scratch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores; data loads in this process)")
    p.add_argument("--time-budget", type=float, default=TIME_BUDGET_S,
                   help="training seconds allowed per task (reported, not enforced)")
    p.add_argument("--no-val", dest="val", action="store_false",
                   help="skip the evaluation of the instance model on the 80 coco_tiny val images")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results and checkpoints of an earlier run in --output")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... (last)")
    args = p.parse_args(argv)
    if (args.output / RESULT_FILE).exists() and not args.overwrite:
        p.error(f"--output {args.output} already holds {RESULT_FILE} of an earlier run; pass "
                "--overwrite or another --output")
    for folder in ("coco_tiny", "coco_panoptic_sample"):
        if not (args.data_root / folder).is_dir():
            p.error(f"--data-root {args.data_root}: folder {folder}/ not found")
    return args


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    """Fit every task of ``args.tasks``; writes and returns the result record."""
    import torch

    args.threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    record = {**run_header(argv, __spec__.name, "cpu", args.threads), "tasks": {}}
    args.output.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        rec = record["tasks"][task] = fit(task, args, argv)
        print(f"[fit_real_images] {task}: {rec['metric']} = {rec['value']:.2f} on the "
              f"{len(rec['images'])} training images (target >= {rec['target']:g}: "
              f"{'met' if rec['met_target'] else 'NOT met'}); train {rec['train_seconds']} s for "
              f"{rec['iterations']} iterations ({'within' if rec['within_time_budget'] else 'OVER'}"
              f" the {args.time_budget:.0f} s budget)")
        if "val80" in rec:
            print(f"[fit_real_images] {task}: segm AP on the 80 coco_tiny val images = "
                  f"{rec['val80']['segm']['AP']:.2f} ({rec['val80_note']})")
        (args.output / RESULT_FILE).write_text(json.dumps(record, indent=1))
    print(f"[fit_real_images] written: {args.output / RESULT_FILE}")
    return record


def main(argv: Optional[Sequence[str]] = None) -> dict:
    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    main()
