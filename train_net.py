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

import argparse
import copy
import logging
from typing import Any

import knet_d2  # noqa: F401  (first: hides named third-party import warnings; registers parts)

# isort: split
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from knet_d2 import get_knet_cfg
from knet_d2.data.check_data import check_datasets
from knet_d2.data.datasets.cli import add_dataset_argument
from knet_d2.engine import (
    ConfigError,
    IncompatibleWeightsError,
    KNetCheckpointer,
    apply_determinism,
    check_inference_weights,
    check_output_dir,
    run_startup_checks,
)
from knet_d2.engine.launch import LaunchError, launch_training
from knet_d2.engine.output_lock import OutputDirInUseError, lock_output_dir
from knet_d2.engine.plain_logs import setup_d2_loggers, strip_ansi_in_log_files
from knet_d2.engine.trainer import EvaluationDataError, Trainer, build_knet_evaluator

__all__ = [
    "Trainer", "build_knet_evaluator", "setup", "prepare_datasets", "check_data", "main",
    "argument_parser",
]


def setup(args) -> CfgNode:
    """Build the config: D2 defaults + DeepLab keys + K-Net keys, then the file and the opts."""
    if not args.config_file:
        raise SystemExit("train_net.py: --config-file is required (see configs/)")
    try:
        cfg = get_knet_cfg(args.config_file, args.opts, datasets=getattr(args, "dataset", []))
        # Before default_setup writes config.yaml / log.txt into OUTPUT_DIR.
        check_output_dir(cfg, resume=args.resume, eval_only=args.eval_only)
        if not args.eval_only and comm.is_main_process():
            lock_output_dir(cfg.OUTPUT_DIR)  # one training run per OUTPUT_DIR
        setup_d2_loggers(cfg.OUTPUT_DIR, comm.get_rank())  # log.txt without colour codes
        default_setup(cfg, args)
        apply_determinism(cfg)
    except (FileNotFoundError, ConfigError, OutputDirInUseError) as e:
        raise SystemExit(f"train_net.py: {e}") from None
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="knet_d2")
    strip_ansi_in_log_files()
    return cfg


def prepare_datasets(cfg: CfgNode) -> None:
    """Generate the embedded synthetic datasets named by the config if they are missing."""
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets

    if comm.is_main_process():
        ensure_synthetic_for_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    comm.synchronize()


def check_data(cfg: CfgNode) -> None:
    """Read every file of DATASETS.TRAIN and TEST (main process); exit listing all problems."""
    result = None
    if comm.is_main_process():
        result = check_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    result = comm.all_gather(result)[0]
    if not result.ok:
        raise SystemExit(f"train_net.py: data check failed: {result.summary()}")
    logging.getLogger("knet_d2").info(f"Data check passed: {result.summary()}")


def main(args) -> Any:
    cfg = setup(args)
    prepare_datasets(cfg)
    if getattr(args, "check_data", False) or cfg.DATASETS.CHECK_DATA:
        check_data(cfg)
        if getattr(args, "check_data", False):
            return None
    try:  # before the model and the data loader are built
        run_startup_checks(cfg, resume=args.resume, eval_only=args.eval_only)
    except ConfigError as e:
        raise SystemExit(f"train_net.py: {e}") from None
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = KNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        try:  # a checkpoint that leaves parameters random is refused by name
            check_inference_weights(
                checkpointer.last_load_report, strict=cfg.MODEL.WEIGHTS_STRICT,
                weights=cfg.MODEL.WEIGHTS,
            )
        except IncompatibleWeightsError as e:
            raise SystemExit(f"train_net.py --eval-only: {e}") from None
        try:
            res = Trainer.test(cfg, model)
            if cfg.TEST.AUG.ENABLED:
                res.update(Trainer.test_with_TTA(cfg, model))
        except EvaluationDataError as e:
            raise SystemExit(f"train_net.py: {e}") from None
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    try:
        return trainer.train()
    except EvaluationDataError as e:
        raise SystemExit(f"train_net.py: {e}") from None


def argument_parser() -> argparse.ArgumentParser:
    """D2's ``default_argument_parser`` plus ``--dataset`` and ``--check-data``."""
    parser = default_argument_parser()
    add_dataset_argument(parser)
    parser.add_argument(
        "--check-data", action="store_true",
        help="check that every image / annotation file of DATASETS.TRAIN and TEST exists and "
        "decodes, report all problems, and exit (DATASETS.CHECK_DATA True: check, then train)",
    )
    return parser


def invoke_main() -> None:
    args = argument_parser().parse_args()
    print("Command Line Args:", copy.deepcopy(args))
    if not args.config_file:
        raise SystemExit("train_net.py: --config-file is required (see configs/)")
    try:  # the device and the signals, checked before any process is started
        cfg = get_knet_cfg(args.config_file, args.opts, datasets=args.dataset)
    except (FileNotFoundError, ConfigError) as e:
        raise SystemExit(f"train_net.py: {e}") from None
    try:
        launch_training(main, args, device=cfg.MODEL.DEVICE,
                        preemption_signals=cfg.PREEMPTION.SIGNALS)
    except LaunchError as e:
        raise SystemExit(f"train_net.py: {e}") from None


if __name__ == "__main__":
    invoke_main()
