"""What the command-line tools run around the :class:`~knet_d2.engine.trainer.Trainer`, as
Detectron2's ``detectron2.engine.defaults``.

* :func:`get_knet_cfg` — the one way scripts build a config: :func:`knet_d2.config.load_knet_cfg`,
  then every ``DATASETS.REGISTER`` entry (plus the ``--dataset`` specs) registered.
* :func:`knet_argument_parser` — D2's ``default_argument_parser`` plus ``--dataset`` and
  ``--check-data``.
* :func:`knet_default_setup` — D2's ``default_setup`` guarded by the output-directory check and
  lock, with plain-text log files and the ``DETERMINISTIC`` settings.
* :func:`prepare_datasets` / :func:`check_data` — embedded synthetic datasets generated; every
  file of the configured datasets read once (``--check-data``).
* :func:`evaluate_weights` — ``--eval-only``: load ``MODEL.WEIGHTS`` (or the last checkpoint),
  refuse weights that leave parameters random, evaluate (and with test-time augmentation).

The start-up checks that need registered datasets (:func:`~.startup_checks.run_startup_checks`)
run after :func:`prepare_datasets`, before the model and the data loader are built.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, Sequence

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import ConfigError, load_knet_cfg
from ..data.check_data import DataCheckResult, check_datasets
from ..data.datasets.cli import add_dataset_argument, register_dataset_specs
from .checkpointer import KNetCheckpointer
from .host_memory import keep_freed_host_memory
from .output_lock import lock_output_dir
from .plain_logs import setup_d2_loggers, strip_ansi_in_log_files
from .startup_checks import apply_determinism, check_output_dir
from .weights_report import check_inference_weights

__all__ = [
    "get_knet_cfg",
    "knet_argument_parser",
    "knet_default_setup",
    "prepare_datasets",
    "check_data",
    "evaluate_weights",
]

logger = logging.getLogger("knet_d2")


def get_knet_cfg(
    config_file: str,
    opts: Sequence[str] = (),
    freeze: bool = True,
    datasets: Sequence[str] = (),
) -> CfgNode:
    """The config ``train_net.py`` / ``demo/demo.py`` build: D2 defaults, DeepLab keys (poly LR,
    deep stem), K-Net keys, then ``config_file`` and the ``KEY VALUE`` ``opts``
    (:func:`knet_d2.config.load_knet_cfg`).

    ``datasets`` (the ``--dataset`` specs) are appended to ``DATASETS.REGISTER``, and every
    entry of that list is registered (``knet_d2.data.datasets.cli``); a bad entry raises
    ``ConfigError`` (or ``FileNotFoundError`` naming the missing file).
    Falls back to ``MODEL.DEVICE cpu`` when CUDA is not available.
    """
    cfg = load_knet_cfg(config_file, opts)
    cfg.DATASETS.REGISTER = list(cfg.DATASETS.REGISTER) + list(datasets)
    try:
        register_dataset_specs(cfg.DATASETS.REGISTER)
    except ValueError as e:  # DatasetSpecError, or a bad JSON named by register_custom
        raise ConfigError(str(e)) from None
    if freeze:
        cfg.freeze()
    return cfg


def knet_argument_parser() -> argparse.ArgumentParser:
    """D2's ``default_argument_parser`` plus ``--dataset`` and ``--check-data``."""
    parser = default_argument_parser()
    add_dataset_argument(parser)
    parser.add_argument(
        "--check-data", action="store_true",
        help="check that every image / annotation file of DATASETS.TRAIN and TEST exists and "
        "decodes, report all problems, and exit (DATASETS.CHECK_DATA True: check, then train)",
    )
    return parser


def knet_default_setup(cfg: CfgNode, args: argparse.Namespace) -> None:
    """D2's ``default_setup`` (log files, ``config.yaml``, seed) for a run of ``cfg``.

    Before anything is written into ``OUTPUT_DIR``: a training run that would overwrite the
    checkpoints there is refused (``ConfigError``) and the directory is locked for this run
    (``OutputDirInUseError`` when another run holds it). Log files are written without colour
    codes; the ``DETERMINISTIC`` and ``KEEP_FREED_HOST_MEMORY`` settings are applied before any
    model is built.
    """
    check_output_dir(cfg, resume=args.resume, eval_only=args.eval_only)
    if not args.eval_only and comm.is_main_process():
        lock_output_dir(cfg.OUTPUT_DIR)  # one training run per OUTPUT_DIR
    setup_d2_loggers(cfg.OUTPUT_DIR, comm.get_rank())  # log.txt without colour codes
    default_setup(cfg, args)
    apply_determinism(cfg)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="knet_d2")
    if cfg.KEEP_FREED_HOST_MEMORY:  # in every launched process, before the model is built
        keep_freed_host_memory()
    strip_ansi_in_log_files()


def prepare_datasets(cfg: CfgNode) -> None:
    """Generate the embedded synthetic datasets named by the config if they are missing."""
    from ..data.datasets.register_synthetic import ensure_synthetic_for_datasets

    if comm.is_main_process():
        ensure_synthetic_for_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    comm.synchronize()


def check_data(cfg: CfgNode) -> DataCheckResult:
    """Read every file of DATASETS.TRAIN and TEST (main process); every process gets the
    result (``result.ok``, ``result.summary()`` listing all problems)."""
    result = None
    if comm.is_main_process():
        result = check_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    result = comm.all_gather(result)[0]
    if result.ok:
        logger.info(f"Data check passed: {result.summary()}")
    return result


def evaluate_weights(trainer: Any, cfg: CfgNode, *, resume: bool) -> Dict[str, Any]:
    """Evaluate ``MODEL.WEIGHTS`` (``resume``: the last checkpoint in ``OUTPUT_DIR``) on
    ``DATASETS.TEST`` with ``trainer``'s ``build_model`` / ``test`` / ``test_with_TTA``.

    Raises:
        IncompatibleWeightsError: the weights leave model parameters missing or of another
            shape (``MODEL.WEIGHTS_STRICT``).
        EvaluationDataError: an evaluation image is missing or unreadable.
    """
    model = trainer.build_model(cfg)
    checkpointer = KNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    # a checkpoint that leaves parameters random is refused by name
    check_inference_weights(
        checkpointer.last_load_report, strict=cfg.MODEL.WEIGHTS_STRICT, weights=cfg.MODEL.WEIGHTS,
    )
    res = trainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        res.update(trainer.test_with_TTA(cfg, model))
    if comm.is_main_process():
        verify_results(cfg, res)
    return res
