"""Fail at start-up, with a message saying what to change, instead of minutes into a run.

* :func:`merge_config` — unknown keys, wrong value types, missing ``_BASE_`` files and YAML
  syntax errors name the config file (or command-line option) and the key, with the closest
  known keys (used by :func:`knet_d2.get_knet_cfg`).
* :func:`check_output_dir` — a training run starting at iteration 0 (no ``--resume``, or no
  ``last_checkpoint`` to resume from) would overwrite the checkpoints in ``OUTPUT_DIR``.
* :func:`check_model_weights` — ``MODEL.WEIGHTS`` does not exist / cannot be fetched (with
  where to get the known ImageNet weights and which ``tools/convert-*.py`` makes them), or
  ``--eval-only`` without weights.
* :func:`check_dataset_names` — ``DATASETS.TRAIN`` / ``TEST`` names that are not registered
  (``MetadataCatalog.get`` would silently create empty metadata and skip the class checks).
* :func:`check_num_classes` — class counts that disagree with the datasets' metadata;
  :func:`check_task_flags` — every ``MODEL.KNET.TEST.*_ON`` flag off.
* :func:`apply_determinism` — ``DETERMINISTIC`` settings (and their conflicts).
"""
from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path
from typing import Any, List, Optional, Sequence

import torch
import yaml
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.utils.file_io import PathManager

__all__ = [
    "ConfigError",
    "merge_config",
    "check_output_dir",
    "check_model_weights",
    "weights_hint",
    "check_dataset_names",
    "check_num_classes",
    "check_task_flags",
    "apply_determinism",
    "run_startup_checks",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A configuration mistake found before training; the message says what to change."""


# --------------------------------------------------------------------------- config merging
def _all_keys(node: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys += _all_keys(v, full + ".")
    return keys


def _suggest(cfg: CfgNode, key: str) -> str:
    keys = _all_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.85)
    if not close:  # a right leaf name under a wrong parent, e.g. MODEL.NUM_PROPOSALS
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:3]
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _yaml_chain(config_file: str) -> List[tuple]:
    """``[(file, safe-loaded dict or None)]`` for ``config_file`` and its ``_BASE_`` files,
    the file itself first."""
    out, todo, seen = [], [config_file], set()
    while todo:
        f = todo.pop(0)
        if f in seen:
            continue
        seen.add(f)
        try:
            with open(f) as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            data = None
        out.append((f, data))
        bases = (data or {}).get("_BASE_") if isinstance(data, dict) else None
        for b in [bases] if isinstance(bases, str) else (bases or []):
            b = os.path.expanduser(b)
            if not b.startswith(("/", "http://", "https://")):
                b = os.path.join(os.path.dirname(f), b)
            todo.append(b)
    return out


def _files_setting(config_file: str, key: str) -> List[str]:
    files = []
    for f, data in _yaml_chain(config_file):
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = KeyError
                break
            node = node[part]
        if node is not KeyError:
            files.append(f)
    return files


def _key_in(message: str) -> Optional[str]:
    m = re.search(r"(?:key|config key):\s*([A-Za-z0-9_.]+)", message)
    return m.group(1) if m else None


def merge_config(cfg: CfgNode, config_file: str, opts: Sequence[str] = ()) -> None:
    """``cfg.merge_from_file(config_file)`` then ``cfg.merge_from_list(opts)``; any mistake
    raises :class:`ConfigError` naming the file / option, the key and what to do."""
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, AssertionError) as e:
        msg = str(e.args[0]) if e.args else str(e)
        key = _key_in(msg)
        where = _files_setting(config_file, key) if key else []
        src = where[0] if where else config_file
        if key and "Non-existent" in msg:
            raise ConfigError(
                f"{src}: unknown config key {key}.{_suggest(cfg, key)} Fix or remove it "
                f"(loading {config_file})."
            ) from None
        raise ConfigError(f"{src}: {msg} (loading {config_file})") from None
    except FileNotFoundError as e:
        missing = [f for f, _ in _yaml_chain(config_file) if not os.path.isfile(f)]
        what = f"base config {missing[0]} not found" if missing else str(e)
        raise ConfigError(f"{config_file}: {what} (check its _BASE_ entries)") from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"{config_file} (or one of its _BASE_ files): invalid YAML: {e}"
        ) from None

    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"command-line options must be KEY VALUE pairs; got an odd number: {opts}"
        )
    for key, value in zip(opts[0::2], opts[1::2]):
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, ValueError, AssertionError) as e:
            msg = str(e.args[0]) if e.args else str(e)
            if "Non-existent" in msg:
                raise ConfigError(
                    f"command-line option {key}: unknown config key.{_suggest(cfg, key)}"
                ) from None
            raise ConfigError(f"command-line option {key} {value}: {msg}") from None


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
def _tool(name: str) -> Optional[str]:
    return f"tools/{name}" if (REPO_ROOT / "tools" / name).is_file() else None


def weights_hint(weights: str) -> str:
    """Where to get a known ImageNet weight file named in the configs, and how to convert it."""
    base = os.path.basename(weights.split("?", 1)[0])
    m = re.fullmatch(r"R-(50|101)\.pkl", base)
    if m:
        depth = m.group(1)
        tv = {"50": "resnet50-0676ba61.pth", "101": "resnet101-63fe2227.pth"}[depth]
        text = (
            f"{base} is torchvision's ImageNet ResNet-{depth} in D2 format. D2 downloads "
            f"detectron2://ImageNetPretrained/torchvision/{base} (= https://dl.fbaipublicfiles"
            f".com/detectron2/ImageNetPretrained/torchvision/{base}) when online; offline, "
            "download that file and set MODEL.WEIGHTS to it"
        )
        tool = _tool("convert-torchvision-to-d2.py")
        if tool:
            text += (
                f", or convert https://download.pytorch.org/models/{tv} with "
                f"`python {tool} {tv} {weights if '://' not in weights else 'pretrained/' + base}`"
            )
        return text + "."
    m = re.fullmatch(r"resnet(50|101)_v1c(_d2)?\.pkl", base)
    if m:
        src = {"50": "resnet50_v1c-2cccc1ad.pth", "101": "resnet101_v1c-e67eebb6.pth"}[m.group(1)]
        text = (
            f"{base} is OpenMMLab's ImageNet ResNetV1c-{m.group(1)}: download "
            f"https://download.openmmlab.com/pretrain/third_party/{src}"
        )
        tool = _tool("convert-mmcv-resnet-v1c-to-d2.py")
        return text + (f" and run `python {tool} {src} {weights}`." if tool else ".")
    m = re.fullmatch(r"(swin_\w+)\.pkl", base)
    if m:
        text = (
            f"{base} is an official Swin Transformer ImageNet checkpoint: download "
            f"https://github.com/SwinTransformer/storage/releases/download/v1.0.0/{m.group(1)}.pth"
        )
        tool = _tool("convert-pretrained-swin-model-to-d2.py")
        return text + (f" and run `python {tool} {m.group(1)}.pth {weights}`." if tool else ".")
    return ""


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
    from knet_d2.data.datasets.cli import DatasetSpecError, check_datasets_registered

    try:
        check_datasets_registered(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
        check_datasets_registered(cfg.DATASETS.TEST, "DATASETS.TEST")
    except DatasetSpecError as e:
        raise ConfigError(str(e)) from None


def check_num_classes(cfg: CfgNode) -> None:
    """Class counts of the model vs. the ``DATASETS.TRAIN`` / ``TEST`` metadata."""
    if cfg.MODEL.META_ARCHITECTURE == "KNet":
        from knet_d2.knet_model import check_class_counts

        k = cfg.MODEL.KNET
        try:
            check_class_counts(cfg, k.NUM_THING_CLASSES, k.NUM_STUFF_CLASSES)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return
    if cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor":
        n = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
            classes = getattr(MetadataCatalog.get(name), "stuff_classes", None)
            if classes is not None and len(classes) != n:
                raise ConfigError(
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {n} but dataset '{name}' has "
                    f"{len(classes)} classes (stuff_classes): set "
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(classes)}"
                )


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


def check_task_flags(cfg: CfgNode) -> None:
    """A K-Net model must have at least one ``MODEL.KNET.TEST.*_ON`` output."""
    t = cfg.MODEL.KNET.TEST
    if cfg.MODEL.META_ARCHITECTURE == "KNet" and not (
        t.SEMANTIC_ON or t.INSTANCE_ON or t.PANOPTIC_ON
    ):
        raise ConfigError(
            "All of MODEL.KNET.TEST.SEMANTIC_ON / INSTANCE_ON / PANOPTIC_ON are False: inference "
            "would return nothing. Turn at least one on."
        )


def check_inference_options(cfg: CfgNode) -> None:
    """``TEST.IMS_PER_BATCH`` >= 1 and a ``TEST.PRECISION`` the device supports."""
    from ..inference_options import check_precision

    if int(cfg.TEST.IMS_PER_BATCH) < 1:
        raise ConfigError(f"TEST.IMS_PER_BATCH must be >= 1, got {cfg.TEST.IMS_PER_BATCH}")
    try:
        check_precision(cfg.TEST.PRECISION, cfg.MODEL.DEVICE)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def run_startup_checks(cfg: CfgNode, *, resume: bool, eval_only: bool = False) -> None:
    """The checks that need registered datasets: names, weights, class counts, task flags,
    inference options."""
    check_dataset_names(cfg)
    check_model_weights(cfg, resume=resume, eval_only=eval_only)
    check_num_classes(cfg)
    check_task_flags(cfg)
    check_inference_options(cfg)

