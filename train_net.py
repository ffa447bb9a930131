#!/usr/bin/env python
"""Train and evaluate K-Net with Detectron2 (semantic, instance, panoptic).

Usage (as D2's tools/train_net.py)::

    python train_net.py --config-file configs/panoptic/knet_r101.yaml --num-gpus 8
    python train_net.py --config-file configs/synthetic/panoptic/knet_R18_tiny.yaml \
        MODEL.DEVICE cpu
    python train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <checkpoint>
    python train_net.py --config-file <cfg> --resume          # continue from last_checkpoint

Multi-machine: ``--num-machines N --machine-rank R --dist-url tcp://host:port``, or start it
with ``torchrun --nproc_per_node N train_net.py ...`` or SLURM ``srun`` (one task per GPU; see
tools/slurm_train.sh). SIGTERM / SIGUSR1 save a checkpoint and exit with code 75 (requeue, then
``--resume``).
"""
from __future__ import annotations

import copy
from typing import Any

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import knet_d2  # noqa: F401  (registers datasets and model parts)
from knet_d2 import get_knet_cfg
from knet_d2.engine import (
    ConfigError,
    KNetCheckpointer,
    apply_determinism,
    check_output_dir,
    run_startup_checks,
)
from knet_d2.engine.launch import LaunchError, launch_training
from knet_d2.engine.output_lock import OutputDirInUseError, lock_output_dir
from knet_d2.engine.trainer import Trainer, build_knet_evaluator

__all__ = ["Trainer", "build_knet_evaluator", "setup", "prepare_datasets", "main"]


def setup(args) -> CfgNode:
    """Build the config: D2 defaults + DeepLab keys + K-Net keys, then the file and the opts."""
    if not args.config_file:
        raise SystemExit("train_net.py: --config-file is required (see configs/)")
    try:
        cfg = get_knet_cfg(args.config_file, args.opts)
        # Before default_setup writes config.yaml / log.txt into OUTPUT_DIR.
        check_output_dir(cfg, resume=args.resume, eval_only=args.eval_only)
        if not args.eval_only and comm.is_main_process():
            lock_output_dir(cfg.OUTPUT_DIR)  # one training run per OUTPUT_DIR
        default_setup(cfg, args)
        apply_determinism(cfg)
    except (FileNotFoundError, ConfigError, OutputDirInUseError) as e:
        raise SystemExit(f"train_net.py: {e}") from None
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="knet_d2")
    return cfg


def prepare_datasets(cfg: CfgNode) -> None:
    """Generate the embedded synthetic datasets named by the config if they are missing."""
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets

    if comm.is_main_process():
        ensure_synthetic_for_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    comm.synchronize()


def main(args) -> Any:
    cfg = setup(args)
    prepare_datasets(cfg)
    try:  # before the model and the data loader are built
        run_startup_checks(cfg, resume=args.resume, eval_only=args.eval_only)
    except ConfigError as e:
        raise SystemExit(f"train_net.py: {e}") from None
    if args.eval_only:
        model = Trainer.build_model(cfg)
        KNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    print("Command Line Args:", copy.deepcopy(args))
    if not args.config_file:
        raise SystemExit("train_net.py: --config-file is required (see configs/)")
    try:  # the device and the signals, checked before any process is started
        cfg = get_knet_cfg(args.config_file, args.opts)
    except (FileNotFoundError, ConfigError) as e:
        raise SystemExit(f"train_net.py: {e}") from None
    try:
        launch_training(main, args, device=cfg.MODEL.DEVICE,
                        preemption_signals=cfg.PREEMPTION.SIGNALS)
    except LaunchError as e:
        raise SystemExit(f"train_net.py: {e}") from None


if __name__ == "__main__":
    invoke_main()
