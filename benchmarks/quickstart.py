#!/usr/bin/env python
"""``make quickstart``: the main job on the embedded synthetic data, on the CPU.

1. generate the synthetic datasets (only when missing) under $DETECTRON2_DATASETS;
2. fit and score the two baselines (colour-only per-pixel classifier, majority stuff class;
   benchmarks/synthetic_baselines.py) on the same splits -> ``baselines.json``;
3. for each task (panoptic, instance, semantic): train its 10-minute recipe (:data:`RECIPES`)
   on the CPU and evaluate it on the synthetic val split with D2's evaluators
   (benchmarks/train_synthetic.py, one process each);
4. draw the trained models' predictions on synthetic val images and on real photos
   (scikit-image's bundled samples) with D2's Visualizer (knet_d2/rendering.py).

The recipes train on the 16 000-image split (generated in step 1 when missing: about 2 minutes
and 390 MB) in bf16 (fast on CPUs with AVX512-BF16 or AMX) with ``KEEP_FREED_HOST_MEMORY``,
each with ``SOLVER.TIME_BUDGET.SECONDS 590``: its schedule's length is fitted to the machine so
that training, evaluations included, ends within issue 14's 10 minutes (a slower CPU trains
fewer iterations; benchmarks/RESULTS.md).

Everything goes under ``--output`` (default output/quickstart). The table printed at the end
(benchmarks/synthetic_report.py) holds PQ, PQ_th, PQ_st, mask AP, mIoU and the per-class PQ / AP
/ IoU of the models next to both baselines, and the targets of issue 14 with met yes/no; its raw
numbers go to ``summary.json`` next to ``baselines.json``. A task that fails is reported and the
others still run. ``--config TASK=FILE`` trains another config for a task, e.g. the task's short
base config (2500 iterations on the 2000-image split)::

    make quickstart QS_FLAGS="--config instance=configs/synthetic/instance/knet_R18_tiny.yaml"
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

from .bench_lock import benchmark_lock

ROOT = Path(__file__).resolve().parents[1]

TASKS = ("panoptic", "instance", "semantic")
#: the config each task trains unless ``--config`` names another: its 10-minute recipe
RECIPES: Dict[str, str] = {
    "panoptic": "configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml",
    "instance": "configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml",
    "semantic": "configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml",
}


def _real_photos(out_dir: Path) -> list:
    """Save two of scikit-image's bundled photos as JPEGs (no download needed)."""
    import cv2
    from skimage import data as skdata

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("astronaut", "coffee"):
        rgb = getattr(skdata, name)()
        p = out_dir / f"{name}.jpg"
        cv2.imwrite(str(p), rgb[:, :, ::-1])
        paths.append(p)
    return paths


def _val_images(task: str, n: int = 4) -> list:
    from detectron2.data import DatasetCatalog

    import knet_d2  # noqa: F401

    name = {"panoptic": "knet_synth_panoptic_val", "instance": "knet_synth_instance_val",
            "semantic": "knet_synth_sem_seg_val"}[task]
    return [Path(d["file_name"]) for d in DatasetCatalog.get(name)[:n]]


def task_configs(specs: Sequence[str], tasks: Sequence[str] = TASKS) -> Dict[str, str]:
    """``{task: config file}`` for every task of ``tasks``: its :data:`RECIPES` entry, or the file
    of a ``--config`` value ``TASK=FILE`` (relative to the repository root or absolute). An
    unknown task, a repeated task, a missing file or a task not among ``tasks`` (the ones that
    run) is an error naming it."""
    configs: Dict[str, str] = {}
    for spec in specs:
        task, sep, file = spec.partition("=")
        if not sep or task not in TASKS or not file:
            raise ValueError(f"--config {spec!r}: expected TASK=FILE with TASK one of "
                             f"{', '.join(TASKS)}")
        if task in configs:
            raise ValueError(f"--config: {task} given twice ({configs[task]}, {file})")
        if not (ROOT / file).is_file():
            raise ValueError(f"--config {spec!r}: no such config file: {ROOT / file}")
        configs[task] = file
    unused = sorted(set(configs) - set(tasks))
    if unused:
        raise ValueError(f"--config for {', '.join(unused)}, which --tasks does not run")
    return {task: configs.get(task, RECIPES[task]) for task in tasks}


def config_datasets(config_file: str) -> List[str]:
    """``DATASETS.TRAIN + DATASETS.TEST`` of ``config_file`` (relative to the repository root or
    absolute): the names whose synthetic data the quickstart generates before training."""
    from knet_d2 import get_knet_cfg

    cfg = get_knet_cfg(str(ROOT / config_file))
    return [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]


def train_command(task: str, task_out: Path, baselines_json: Path, overwrite: bool,
                  config: str) -> List[str]:
    """The ``benchmarks.train_synthetic`` command line that trains and evaluates ``task``."""
    from benchmarks.train_synthetic import command_line

    return command_line(task, task_out, config=config, baselines=baselines_json,
                        overwrite=overwrite)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="output/quickstart")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument(
        "--overwrite", action="store_true",
        help="retrain into task folders that hold the checkpoints of an earlier quickstart",
    )
    ap.add_argument(
        "--config", action="append", default=[], metavar="TASK=FILE",
        help="train this config for TASK instead of its 10-minute recipe; repeatable",
    )
    a = ap.parse_args()
    try:
        a.config = task_configs(a.config, a.tasks)
    except ValueError as e:
        ap.error(str(e))
    with benchmark_lock(__spec__.name, sys.argv[1:]):  # handed down to train_synthetic
        return run(a)


def run(a: argparse.Namespace) -> int:
    """Generate the data, train and evaluate every task of ``a.tasks``, draw the pictures."""
    out = Path(a.output)
    used = [str(out / t) for t in a.tasks if any((out / t).glob("*.pth"))]
    if used and not a.overwrite:
        print(f"[quickstart] {', '.join(used)} already hold(s) trained checkpoints of an earlier "
              "run. Rerun with --overwrite to replace them (make quickstart "
              "QS_OUT=<new folder> writes elsewhere).")
        return 2
    out.mkdir(parents=True, exist_ok=True)

    from knet_d2.data.datasets.register_synthetic import (
        ensure_synthetic_dataset,
        ensure_synthetic_for_datasets,
    )

    t0 = time.perf_counter()
    root = ensure_synthetic_dataset()  # the baselines' splits
    # ... and those of the configs to train (e.g. the recipes' 16 000-image split)
    ensure_synthetic_for_datasets(n for t in a.tasks for n in config_datasets(a.config[t]))
    print(f"[quickstart] synthetic datasets ready under {root} ({time.perf_counter() - t0:.1f} s)")

    from benchmarks.synthetic_baselines import evaluate_baselines
    from benchmarks.train_synthetic import BASELINE_TRAIN, BASELINE_VAL

    t0 = time.perf_counter()
    baselines = evaluate_baselines(BASELINE_TRAIN, BASELINE_VAL, str(out / "baselines"))
    baselines_json = out / "baselines.json"
    baselines_json.write_text(json.dumps(baselines, indent=2))
    print(f"[quickstart] baselines fit and scored ({time.perf_counter() - t0:.1f} s) -> "
          f"{baselines_json}")

    summary = {}
    for task in a.tasks:
        task_out = out / task
        print(f"[quickstart] training + evaluating K-Net ({task}) on the CPU -> {task_out}")
        proc = subprocess.run(
            train_command(task, task_out, baselines_json, a.overwrite, a.config[task]),
            cwd=ROOT,
        )
        summary_file = task_out / "benchmark_summary.json"
        if proc.returncode != 0 or not summary_file.is_file():
            print(f"[quickstart] {task}: FAILED (exit {proc.returncode}); see {task_out}/log.txt")
            summary[task] = {"failed": True, "exit_code": proc.returncode}
            continue
        summary[task] = json.loads(summary_file.read_text())
        weights = task_out / "model_final.pth"
        try:
            from knet_d2.rendering import render_predictions

            images = _val_images(task) + _real_photos(out / "real_photos")
            from knet_d2 import get_knet_cfg

            cfg = get_knet_cfg(str(ROOT / summary[task]["config"]), ["MODEL.DEVICE", "cpu"])
            # 0.3 = K-Net's own panoptic thing-score threshold (MODEL.KNET.TEST)
            drawn = render_predictions(
                cfg, str(weights), images, task_out / "demo", confidence_threshold=0.3
            )
            summary[task]["demo_pictures"] = [str(p) for p in drawn]
            print(f"[quickstart] {task}: {len(drawn)} demo pictures in {task_out / 'demo'}")
        except Exception as e:  # pictures are a bonus: report, keep the metrics
            print(f"[quickstart] {task}: demo pictures failed: {type(e).__name__}: {e}")
            summary[task]["demo_error"] = f"{type(e).__name__}: {e}"

    from benchmarks.synthetic_report import comparison, format_comparison, merge_task_results
    from benchmarks.train_synthetic import class_names

    model, source = merge_task_results(summary)
    table = comparison(model, baselines, *class_names())
    (out / "summary.json").write_text(json.dumps(
        {"tasks": summary, "metric_source": source, "comparison": table,
         "baselines_json": str(baselines_json)}, indent=2))
    print("\n[quickstart] summary (D2 evaluators, synthetic val split)")
    for task, s in summary.items():
        print(f"  {task:<9} " + ("FAILED" if s.get("failed") else
                                 f"{s['metric']} {s['value']:.2f}, train {s['train_seconds']} s"))
    print("K-Net column: PQ rows from the panoptic model, AP rows from the instance model, "
          "IoU rows from the semantic model (" + ", ".join(f"{g}: {t}" for g, t in
                                                          sorted(source.items())) + ")")
    print(format_comparison(table))
    print(f"[quickstart] written: {out / 'summary.json'}, {baselines_json}")
    return 1 if any(s.get("failed") for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
