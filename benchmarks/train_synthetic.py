#!/usr/bin/env python
"""Proof that K-Net learns: train on a synthetic split on the CPU, evaluate with D2's evaluators.

    python -m benchmarks.train_synthetic --task panoptic --output output/bench_panoptic
    python -m benchmarks.train_synthetic --task instance --time-budget 600
    python -m benchmarks.train_synthetic --task panoptic --overwrite   # retrain into --output
    python -m benchmarks.train_synthetic --task semantic \
        --config-file configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml

(from the repository root, which puts ``train_net`` on the import path).

Trains the config of the task (``configs/synthetic/<task>/...``, or ``--config-file``) with
``train_net.Trainer`` for the iterations in the config, then evaluates on the synthetic val
split with D2's evaluators (:mod:`benchmarks.synthetic_evaluators`: per-class PQ added) and
prints a table of PQ, PQ_th, PQ_st, mask AP, mIoU and the per-class PQ / AP / IoU next to the
two baselines of :mod:`benchmarks.synthetic_baselines` (fit and scored on the same splits;
``--baselines FILE`` reuses a ``baselines.json``), then the targets of issue 14
(:mod:`benchmarks.synthetic_report`) with met yes/no. Raw JSON: ``benchmark_summary.json`` and
``baselines.json`` in ``--output``.
Exit status 0 means the run completed (targets are reported, not enforced: see
benchmarks/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Sequence

from .bench_lock import benchmark_lock

ROOT = Path(__file__).resolve().parents[1]

# task -> (config, metric group, metric key, absolute target of issue 14)
TASKS = {
    "panoptic": ("configs/synthetic/panoptic/knet_R18_tiny.yaml", "panoptic_seg", "PQ_th", 50.0),
    "instance": ("configs/synthetic/instance/knet_R18_tiny.yaml", "segm", "AP", 50.0),
    "semantic": ("configs/synthetic/semantic/knet_upernet_tiny.yaml", "sem_seg", "mIoU", 60.0),
}
BASELINE_TRAIN, BASELINE_VAL = "knet_synth_sem_seg_train", "knet_synth_panoptic_val"


def command_line(task: str, output: Path | str, *, config: str | None = None,
                 baselines: Path | str | None = None, time_budget: float | None = None,
                 overwrite: bool = False, opts: Sequence = (),
                 python: str = sys.executable) -> List[str]:
    """The command line that runs this script for ``task`` into ``output`` (what quickstart
    and timed_series start): the options given, then the config overrides ``opts``."""
    cmd = [python, "-m", "benchmarks.train_synthetic", "--task", task, "--output", str(output)]
    if baselines:
        cmd += ["--baselines", str(baselines)]
    if config:
        cmd += ["--config-file", str(config)]
    if time_budget is not None:
        cmd += ["--time-budget", f"{float(time_budget):g}"]
    if overwrite:
        cmd.append("--overwrite")
    return cmd + [str(v) for v in opts]


def load_or_compute_baselines(output: str, baselines_json: str | None = None) -> dict:
    """The baselines of :mod:`benchmarks.synthetic_baselines`: read from ``baselines_json``
    when given, else fit and evaluated now; written to ``<output>/baselines.json``."""
    if baselines_json:
        res = json.loads(Path(baselines_json).read_text())
    else:
        from benchmarks.synthetic_baselines import evaluate_baselines

        res = evaluate_baselines(BASELINE_TRAIN, BASELINE_VAL, os.path.join(output, "baselines"))
    Path(output).mkdir(parents=True, exist_ok=True)
    Path(output, "baselines.json").write_text(json.dumps(res, indent=2))
    return res


def class_names() -> tuple:
    """(all class names, thing class names) of the synthetic set."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(BASELINE_VAL)
    return list(meta.stuff_classes), list(meta.thing_classes)


def train_timed(cli_args: argparse.Namespace) -> tuple:
    """``train_net``'s set-up and a fresh training from ``cli_args`` (its parsed command line);
    returns ``(cfg, trainer, training seconds)``, the datasets' registration excluded."""
    import train_net

    cfg = train_net.setup(cli_args)
    train_net.prepare_datasets(cfg)
    t0 = time.perf_counter()
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return cfg, trainer, time.perf_counter() - t0


def results_as_floats(results: dict) -> dict:
    """D2's ``{task: {metric: value}}`` results with plain floats (JSON-ready)."""
    return {g: {k: float(v) for k, v in r.items()} for g, r in results.items()}


def run(
    task: str, output: str, opts: list, time_budget: float, threads: int, overwrite: bool = False,
    baselines_json: str | None = None, argv: Sequence[str] = (), config_file: str | None = None,
) -> dict:
    """Train + evaluate one task; returns the metrics, wall times, the comparison with the
    baselines and the verdict, with the run header (date, commit, machine, command from
    ``argv``) of :func:`benchmarks.cli.run_header`.

    ``overwrite``: replace the checkpoints of an earlier run in ``output`` (else refused).
    ``baselines_json``: reuse the baselines of an earlier ``baselines.json``.
    ``config_file``: train this config instead of the task's (same metric and target)."""
    import torch
    from detectron2.engine import default_argument_parser

    import train_net
    from benchmarks.synthetic_baselines import flatten_results
    from benchmarks.synthetic_evaluators import TASK_EVALUATIONS, build_synthetic_evaluator
    from benchmarks.synthetic_report import comparison

    from .cli import run_header

    config, group, key, target = TASKS[task]
    config = config_file or config
    torch.set_num_threads(threads)
    header = run_header(argv, __spec__.name, "cpu", threads)
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / config), "OUTPUT_DIR", output, "MODEL.DEVICE", "cpu",
         "OUTPUT_OVERWRITE", str(bool(overwrite)), *opts]
    )
    cfg, trainer, train_s = train_timed(args)
    t1 = time.perf_counter()
    evaluators = [
        build_synthetic_evaluator(name, TASK_EVALUATIONS[task], os.path.join(output, "inference"))
        for name in cfg.DATASETS.TEST
    ]
    results = train_net.Trainer.test(cfg, trainer.model, evaluators)
    eval_s = time.perf_counter() - t1
    value = float(results[group][key])
    baselines = load_or_compute_baselines(output, baselines_json)
    table = comparison(flatten_results(results), baselines, *class_names())
    verdict = next(t for t in table["targets"] if t["key"] == f"{group}/{key}")
    summary = {
        **header,
        "task": task,
        "config": config,
        "iterations": trainer.max_iter,  # fitted to SOLVER.TIME_BUDGET.SECONDS when set
        "configured_iterations": cfg.SOLVER.MAX_ITER,
        "schedule_time_budget_s": cfg.SOLVER.TIME_BUDGET.SECONDS,
        "batch": cfg.SOLVER.IMS_PER_BATCH,
        "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "metric": f"{group}/{key}",
        "value": round(value, 2),
        "target": target,
        "required": verdict["required"],
        "met_target": bool(verdict["met"]),
        "within_time_budget": train_s <= time_budget,
        "results": results_as_floats(results),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "comparison": table,
        "baselines_json": os.path.join(output, "baselines.json"),
    }
    Path(output).mkdir(parents=True, exist_ok=True)
    with open(os.path.join(output, "benchmark_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--config-file", default=None, metavar="YAML",
                    help="train this config instead of the task's (e.g. a longer recipe); "
                    "the task still picks the metric and the target")
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
    ap.add_argument("--baselines", default=None, metavar="JSON",
                    help="reuse this baselines.json (benchmarks.synthetic_baselines) instead of "
                    "fitting the baselines again")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    a = ap.parse_args()
    out = a.output or f"output/bench_{a.task}"
    with benchmark_lock(__spec__.name, sys.argv[1:]):
        s = run(a.task, out, a.opts, a.time_budget, a.threads, overwrite=a.overwrite,
                baselines_json=a.baselines, argv=sys.argv[1:], config_file=a.config_file)
    from benchmarks.synthetic_report import format_comparison

    print(f"\n[benchmark] {s['task']} model vs baselines (D2 evaluators, synthetic val split)")
    print(format_comparison(s["comparison"]))
    print(
        f"[benchmark] {s['task']}: {s['metric']} = {s['value']:.2f} (target >= "
        f"{s['required']:.1f}, "
        f"{'met' if s['met_target'] else 'NOT met'}); train {s['train_seconds']} s for "
        f"{s['iterations']} iters x {s['batch']} images "
        f"({'within' if s['within_time_budget'] else 'OVER'} the {a.time_budget:.0f} s budget); "
        f"eval {s['eval_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
