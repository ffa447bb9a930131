#!/usr/bin/env python
"""Proof that K-Net learns: train on a synthetic split on the CPU, evaluate with D2's evaluators.

    python -m benchmarks.train_synthetic --task panoptic --output output/bench_panoptic
    python -m benchmarks.train_synthetic --task instance --time-budget 600
    python -m benchmarks.train_synthetic --task panoptic --overwrite   # retrain into --output

(from the repository root, which puts ``train_net`` on the import path).

Trains the config of the task (``configs/synthetic/<task>/...``) with ``train_net.Trainer`` for
the iterations in the config, then evaluates on the synthetic val split and prints one line per
metric plus the wall time, and whether the target was met. Exit status 0 means the run
completed (targets are reported, not enforced: see benchmarks/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from .bench_lock import benchmark_lock

ROOT = Path(__file__).resolve().parents[1]

# task -> (config, metric group, metric key, target)
TASKS = {
    "panoptic": ("configs/synthetic/panoptic/knet_R18_tiny.yaml", "panoptic_seg", "PQ", 70.0),
    "instance": ("configs/synthetic/instance/knet_R18_tiny.yaml", "segm", "AP", 60.0),
    "semantic": ("configs/synthetic/semantic/knet_upernet_tiny.yaml", "sem_seg", "mIoU", 70.0),
}


def run(
    task: str, output: str, opts: list, time_budget: float, threads: int, overwrite: bool = False,
    argv: Sequence[str] = (),
) -> dict:
    """Train + evaluate one task; returns the metrics, wall times and the verdict, with the run
    header (date, commit, machine, command from ``argv``) of :func:`benchmarks.cli.run_header`.

    ``overwrite``: replace the checkpoints of an earlier run in ``output`` (else refused)."""
    import torch
    from detectron2.engine import default_argument_parser

    import train_net

    from .cli import run_header

    config, group, key, target = TASKS[task]
    torch.set_num_threads(threads)
    header = run_header(argv, __spec__.name, "cpu", threads)
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / config), "OUTPUT_DIR", output, "MODEL.DEVICE", "cpu",
         "OUTPUT_OVERWRITE", str(bool(overwrite)), *opts]
    )
    cfg = train_net.setup(args)
    train_net.prepare_datasets(cfg)
    t0 = time.perf_counter()
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    results = train_net.Trainer.test(cfg, trainer.model)
    eval_s = time.perf_counter() - t1
    value = float(results[group][key])
    summary = {
        **header,
        "task": task,
        "config": config,
        "iterations": cfg.SOLVER.MAX_ITER,
        "batch": cfg.SOLVER.IMS_PER_BATCH,
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "metric": f"{group}/{key}",
        "value": round(value, 2),
        "target": target,
        "met_target": value >= target,
        "within_time_budget": train_s <= time_budget,
        "results": {g: {k: float(v) for k, v in r.items()} for g, r in results.items()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    Path(output).mkdir(parents=True, exist_ok=True)
    with open(os.path.join(output, "benchmark_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--output", default=None, help="output folder (default output/bench_<task>)")
    ap.add_argument("--time-budget", type=float, default=600.0, help="training seconds allowed")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="torch CPU threads of the training process (default: all cores; the synthetic "
        "configs map data in the training process, DATALOADER.NUM_WORKERS 0). With data-loading "
        "workers, leave them a core: oversubscribing the cores slows training several-fold",
    )
    ap.add_argument(
        "--overwrite", action="store_true",
        help="retrain into an --output that holds the checkpoints of an earlier run",
    )
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    a = ap.parse_args()
    out = a.output or f"output/bench_{a.task}"
    with benchmark_lock(__spec__.name, sys.argv[1:]):
        s = run(a.task, out, a.opts, a.time_budget, a.threads, overwrite=a.overwrite,
                argv=sys.argv[1:])
    print(
        f"[benchmark] {s['task']}: {s['metric']} = {s['value']:.2f} (target >= {s['target']}, "
        f"{'met' if s['met_target'] else 'NOT met'}); train {s['train_seconds']} s for "
        f"{s['iterations']} iters x {s['batch']} images "
        f"({'within' if s['within_time_budget'] else 'OVER'} the {a.time_budget:.0f} s budget); "
        f"eval {s['eval_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
