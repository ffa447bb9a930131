#!/usr/bin/env python
"""Train and evaluate K-Net with Detectron2 (semantic, instance, panoptic).

Usage (as D2's tools/train_net.py)::

    python train_net.py --config-file configs/panoptic/knet_r101.yaml --num-gpus 8
    python train_net.py --config-file configs/synthetic/panoptic/knet_R18_tiny.yaml \
        MODEL.DEVICE cpu
    python train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <checkpoint>
    python train_net.py --config-file <cfg> --resume          # continue from last_checkpoint
    python train_net.py --config-file configs/custom/knet_R50_cpu_small.yaml \
        --dataset my_train=coco_instance:train.json:images/ --check-data   # own data, see README

Multi-machine: ``--num-machines N --machine-rank R --dist-url tcp://host:port``, or start it
with ``torchrun --nproc_per_node N train_net.py ...`` or SLURM ``srun`` (one task per GPU; see
tools/slurm_train.sh). SIGTERM / SIGUSR1 save a checkpoint and exit with code 75 (requeue, then
``--resume``).
"""
from __future__ import annotations

import copy
from typing import Any

import knet_d2  # noqa: F401  (first: hides named third-party import warnings; registers parts)

# isort: split
from detectron2.config import CfgNode

from knet_d2 import get_knet_cfg
from knet_d2.config import ConfigError
from knet_d2.engine import IncompatibleWeightsError, run_startup_checks
from knet_d2.engine.defaults import (
    check_data,
    evaluate_weights,
    knet_default_setup,
    prepare_datasets,
)
from knet_d2.engine.defaults import knet_argument_parser as argument_parser
from knet_d2.engine.launch import LaunchError, launch_training
from knet_d2.engine.output_lock import OutputDirInUseError
from knet_d2.engine.trainer import EvaluationDataError, Trainer, build_knet_evaluator

__all__ = [
    "Trainer", "build_knet_evaluator", "setup", "prepare_datasets", "main", "argument_parser",
]


def config_of(args) -> CfgNode:
    """The config of ``--config-file``, the ``KEY VALUE`` options and ``--dataset`` specs."""
    if not args.config_file:
        raise SystemExit("train_net.py: --config-file is required (see configs/)")
    try:
        return get_knet_cfg(args.config_file, args.opts, datasets=getattr(args, "dataset", []))
    except (FileNotFoundError, ConfigError) as e:
        raise SystemExit(f"train_net.py: {e}") from None


def setup(args) -> CfgNode:
    """Build the config (D2 defaults + DeepLab keys + K-Net keys, then the file and the opts)
    and set up the run's output directory and logs."""
    cfg = config_of(args)
    try:
        knet_default_setup(cfg, args)
    except (ConfigError, OutputDirInUseError) as e:
        raise SystemExit(f"train_net.py: {e}") from None
    return cfg


def main(args) -> Any:
    cfg = setup(args)
    prepare_datasets(cfg)
    if getattr(args, "check_data", False) or cfg.DATASETS.CHECK_DATA:
        result = check_data(cfg)
        if not result.ok:
            raise SystemExit(f"train_net.py: data check failed: {result.summary()}")
        if getattr(args, "check_data", False):
            return None
    try:  # before the model and the data loader are built
        run_startup_checks(cfg, resume=args.resume, eval_only=args.eval_only)
    except ConfigError as e:
        raise SystemExit(f"train_net.py: {e}") from None
    try:
        if args.eval_only:
            try:
                return evaluate_weights(Trainer, cfg, resume=args.resume)
            except IncompatibleWeightsError as e:
                raise SystemExit(f"train_net.py --eval-only: {e}") from None
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()
    except EvaluationDataError as e:
        raise SystemExit(f"train_net.py: {e}") from None


def invoke_main() -> None:
    args = argument_parser().parse_args()
    print("Command Line Args:", copy.deepcopy(args))
    cfg = config_of(args)  # the device and the signals, checked before any process is started
    try:
        launch_training(main, args, device=cfg.MODEL.DEVICE,
                        preemption_signals=cfg.PREEMPTION.SIGNALS)
    except LaunchError as e:
        raise SystemExit(f"train_net.py: {e}") from None


if __name__ == "__main__":
    invoke_main()
