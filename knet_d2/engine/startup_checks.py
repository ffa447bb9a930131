"""Fail at start-up, with a message saying what to change, instead of minutes into a run.

Run after the config is built (:func:`knet_d2.get_knet_cfg`, whose config merging reports
unknown keys and bad values) and the datasets are registered:

* :func:`check_output_dir` — a training run starting at iteration 0 (no ``--resume``, or no
  ``last_checkpoint`` to resume from) would overwrite the checkpoints in ``OUTPUT_DIR``.
* :func:`check_model_weights` — ``MODEL.WEIGHTS`` does not exist / cannot be fetched (with
  where to get the known ImageNet weights and the command that converts them, from the table
  :data:`knet_d2.known_weights.PRETRAINED_BACKBONES`), or ``--eval-only`` without weights.
* :func:`check_dataset_names` — ``DATASETS.TRAIN`` / ``TEST`` names that are not registered
  (``MetadataCatalog.get`` would silently create empty metadata and skip the class checks).
* :func:`check_num_classes` — class counts that disagree with the datasets' metadata
  (:mod:`knet_d2.data.class_layout`); :func:`check_knet_task_flags` — every
  ``MODEL.KNET.TEST.*_ON`` flag off (:func:`knet_d2.config.check_task_flags`).
* :func:`apply_determinism` — ``DETERMINISTIC`` settings (and their conflicts).

:func:`run_startup_checks` runs the checks that need registered datasets, in that order.
"""
from __future__ import annotations

import logging
import os
from typing import List

import torch
from detectron2.config import CfgNode
from detectron2.utils.file_io import PathManager

from ..config import ConfigError, check_task_flags
from ..data.class_layout import check_class_counts, check_semantic_class_count
from ..data.datasets.cli import DatasetSpecError, check_datasets_registered
from ..inference_options import check_precision
from ..known_weights import find_pretrained_backbone
from .mixed_precision import check_mixed_precision

__all__ = [
    "check_output_dir",
    "check_model_weights",
    "weights_hint",
    "check_dataset_names",
    "check_num_classes",
    "check_knet_task_flags",
    "check_inference_options",
    "apply_determinism",
    "run_startup_checks",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- output dir
def _checkpoint_files(output_dir: str) -> List[str]:
    if not output_dir or "://" in output_dir or not os.path.isdir(output_dir):
        return []
    return sorted(
        f for f in os.listdir(output_dir)
        if (f.endswith(".pth") or f == "last_checkpoint")
        and os.path.isfile(os.path.join(output_dir, f))
    )


def check_output_dir(cfg: CfgNode, *, resume: bool, eval_only: bool = False) -> None:
    """Refuse a training run that would start at iteration 0 in an ``OUTPUT_DIR`` holding
    checkpoints (no ``--resume``, or ``--resume`` without a ``last_checkpoint`` file), unless
    ``OUTPUT_OVERWRITE`` is True. Run it before anything writes into ``OUTPUT_DIR``."""
    if eval_only:
        return
    found = _checkpoint_files(cfg.OUTPUT_DIR)
    if not found or (resume and "last_checkpoint" in found):
        return
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    if resume and not cfg.OUTPUT_OVERWRITE:
        raise ConfigError(
            f"--resume: OUTPUT_DIR {cfg.OUTPUT_DIR} has no last_checkpoint file, so training "
            f"would start from iteration 0 and overwrite its checkpoints ({shown}). Write the "
            f"file name of the checkpoint to continue from into "
            f"{os.path.join(cfg.OUTPUT_DIR, 'last_checkpoint')}, set another OUTPUT_DIR, or "
            "set OUTPUT_OVERWRITE True to start over in this directory."
        )
    if cfg.OUTPUT_OVERWRITE:
        logger.warning(
            f"OUTPUT_OVERWRITE is True: the new run will overwrite checkpoints in "
            f"{cfg.OUTPUT_DIR} ({shown}) and append to its metrics.json / log.txt."
        )
        return
    raise ConfigError(
        f"OUTPUT_DIR {cfg.OUTPUT_DIR} already holds checkpoints of an earlier run ({shown}); "
        "a new run would overwrite them. Add --resume to continue that run, set another "
        "OUTPUT_DIR, or set OUTPUT_OVERWRITE True to start over in this directory."
    )


# --------------------------------------------------------------------------- weights
def weights_hint(weights: str) -> str:
    """Where to get a known ImageNet weight file named in the configs, and the command that
    converts its original release ("" for a file not in the table)."""
    base = os.path.basename(weights.split("?", 1)[0])
    found = find_pretrained_backbone(base)
    if found is None:
        return ""
    known, source_url = found
    source = os.path.basename(source_url)
    if known.d2_name:  # D2 serves the converted file itself
        target = weights if "://" not in weights else "pretrained/" + base
        return (
            f"{base} is {known.description}. D2 downloads {known.d2_name} (= {known.d2_url}) "
            "when online; offline, download that file and set MODEL.WEIGHTS to it, or convert "
            f"{source_url} with `python {known.converter} {source} {target}`."
        )
    return (
        f"{base} is {known.description}: download {source_url} and run "
        f"`python {known.converter} {source} {weights}`."
    )


def check_model_weights(cfg: CfgNode, *, resume: bool, eval_only: bool = False) -> None:
    """``MODEL.WEIGHTS`` must exist (local path) or be fetchable (URL) when it will be loaded,
    i.e. unless ``--resume`` finds a checkpoint in ``OUTPUT_DIR``. Empty means "from scratch"
    for training and is an error for ``--eval-only``."""
    out = cfg.OUTPUT_DIR
    if resume and out and os.path.isfile(os.path.join(out, "last_checkpoint")):
        return
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        if eval_only:
            raise ConfigError(
                "--eval-only needs trained weights: set MODEL.WEIGHTS to a checkpoint "
                "(e.g. <OUTPUT_DIR>/model_final.pth), or add --resume to evaluate the last "
                f"checkpoint in OUTPUT_DIR ({out or 'unset'})."
            )
        logger.info("MODEL.WEIGHTS is empty: the model starts from random initialisation.")
        return
    path = weights.split("?", 1)[0]  # D2 accepts "file?matching_heuristics=True"
    hint = weights_hint(weights)
    scratch = 'To train from scratch instead, set MODEL.WEIGHTS "".'
    if "://" in path:
        try:
            PathManager.get_local_path(path)
        except Exception as e:  # network / handler errors of any kind
            raise ConfigError(
                f"MODEL.WEIGHTS {weights} could not be fetched ({type(e).__name__}: {e}). "
                f"{hint} {scratch}".replace("  ", " ")
            ) from None
        return
    if not os.path.isfile(path):
        raise ConfigError(
            f"MODEL.WEIGHTS file not found: {path} (looked in {os.path.abspath(path)}). "
            f"{hint} {scratch}".replace("  ", " ")
        )


# --------------------------------------------------------------------------- classes
def check_dataset_names(cfg: CfgNode) -> None:
    """Every name in ``DATASETS.TRAIN`` and ``DATASETS.TEST`` must be registered."""
    try:
        check_datasets_registered(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
        check_datasets_registered(cfg.DATASETS.TEST, "DATASETS.TEST")
    except DatasetSpecError as e:
        raise ConfigError(str(e)) from None


def check_num_classes(cfg: CfgNode) -> None:
    """Class counts of the model vs. the ``DATASETS.TRAIN`` / ``TEST`` metadata."""
    if cfg.MODEL.META_ARCHITECTURE == "KNet":
        k = cfg.MODEL.KNET
        check_class_counts(cfg, k.NUM_THING_CLASSES, k.NUM_STUFF_CLASSES)
    elif cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor":
        check_semantic_class_count(cfg)


# --------------------------------------------------------------------------- determinism
def apply_determinism(cfg: CfgNode) -> None:
    """With ``DETERMINISTIC`` True: deterministic cuDNN/cuBLAS and
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` (ops without a deterministic
    kernel warn once instead of failing). Call before the model is built."""
    if not cfg.DETERMINISTIC:
        return
    if cfg.CUDNN_BENCHMARK:
        raise ConfigError(
            "DETERMINISTIC True conflicts with CUDNN_BENCHMARK True (benchmarking picks "
            "algorithms by timing): set CUDNN_BENCHMARK False."
        )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def check_knet_task_flags(cfg: CfgNode) -> None:
    """A K-Net model must have at least one ``MODEL.KNET.TEST.*_ON`` output."""
    t = cfg.MODEL.KNET.TEST
    if cfg.MODEL.META_ARCHITECTURE == "KNet":
        check_task_flags(t.SEMANTIC_ON, t.INSTANCE_ON, t.PANOPTIC_ON)


def check_inference_options(cfg: CfgNode) -> None:
    """``TEST.IMS_PER_BATCH`` >= 1 and a ``TEST.PRECISION`` the device supports."""
    if int(cfg.TEST.IMS_PER_BATCH) < 1:
        raise ConfigError(f"TEST.IMS_PER_BATCH must be >= 1, got {cfg.TEST.IMS_PER_BATCH}")
    try:
        check_precision(cfg.TEST.PRECISION, cfg.MODEL.DEVICE)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_training_precision(cfg: CfgNode) -> None:
    """``SOLVER.AMP``: a precision that ``MODEL.DEVICE`` can train with."""
    check_mixed_precision(cfg.SOLVER.AMP.ENABLED, cfg.SOLVER.AMP.PRECISION, cfg.MODEL.DEVICE)


def check_time_budget(cfg: CfgNode) -> None:
    """``SOLVER.TIME_BUDGET``: a budget of zero (off) or more seconds, a fit period >= 1."""
    budget = cfg.SOLVER.TIME_BUDGET
    if not budget.SECONDS >= 0:
        raise ConfigError(
            f"SOLVER.TIME_BUDGET.SECONDS must be >= 0 (0 = off), got {budget.SECONDS}"
        )
    if budget.SECONDS > 0 and budget.FIT_PERIOD < 1:
        raise ConfigError(
            f"SOLVER.TIME_BUDGET.FIT_PERIOD must be >= 1 iteration, got {budget.FIT_PERIOD}"
        )


def run_startup_checks(cfg: CfgNode, *, resume: bool, eval_only: bool = False) -> None:
    """The checks that need registered datasets: names, weights, class counts, task flags,
    inference options and (when training) the training precision and time budget."""
    check_dataset_names(cfg)
    check_model_weights(cfg, resume=resume, eval_only=eval_only)
    check_num_classes(cfg)
    check_knet_task_flags(cfg)
    check_inference_options(cfg)
    if not eval_only:
        check_training_precision(cfg)
        check_time_budget(cfg)

