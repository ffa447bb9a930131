"""Configs and official checkpoints by name, as ``detectron2.model_zoo``.

A zoo name is a config path relative to the repository's ``configs/`` folder, e.g.
``"coco/panoptic-segmentation/knet_R50_1x.yaml"`` (the ``.yaml`` suffix may be left out).
The configs are read from the ``configs/`` folder next to the installed ``knet_d2`` package,
i.e. knet_d2 must be installed from a clone of the repository (``pip install -e .``, as
``make install`` does); :func:`get_config_file` says so when the folder is absent.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model

from ..config import load_knet_cfg
from ..engine.checkpointer import KNetCheckpointer
from ..engine.weights_report import check_inference_weights
from ..known_weights import MODEL_ZOO, ModelZooEntry

__all__ = [
    "CONFIG_ROOT",
    "get_config_file",
    "get_checkpoint_url",
    "get_config",
    "get",
    "entry",
    "names",
]

#: where the configs are read from: ``configs/`` of the repository knet_d2 is installed from
CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"


def _normalise(name: str) -> str:
    name = str(name).strip().replace("\\", "/")
    if name.startswith("configs/"):
        name = name[len("configs/"):]
    return name if name.endswith(".yaml") else name + ".yaml"


def _by_config() -> Dict[str, ModelZooEntry]:
    return {e.config: e for e in MODEL_ZOO}


def names() -> List[str]:
    """Zoo names of every model in the table, in table order."""
    return [e.config for e in MODEL_ZOO]


def entry(name: str) -> ModelZooEntry:
    """The table row of ``name``.

    Raises:
        KeyError: ``name`` is not in the table (the message lists the closest names).
    """
    key = _normalise(name)
    table = _by_config()
    if key not in table:
        close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise KeyError(
            f"{name!r} is not in the knet_d2 model zoo.{hint} Known names: "
            "knet_d2.model_zoo.names() (MODEL_ZOO.md)."
        )
    return table[key]


def get_config_file(name: str) -> str:
    """Absolute path of the config ``name`` (any file under ``configs/``, zoo entry or not).

    Raises:
        FileNotFoundError: the repository's ``configs/`` folder is absent (knet_d2 installed
            without it) or has no such config.
    """
    if not CONFIG_ROOT.is_dir():
        raise FileNotFoundError(
            f"knet_d2's configs folder {CONFIG_ROOT} does not exist: the model zoo reads the "
            "configs of the repository knet_d2 is installed from. Install it from a clone "
            "(git clone ...; pip install -e .), or pass a config file path instead of a name."
        )
    path = CONFIG_ROOT / _normalise(name)
    if not path.is_file():
        known = [str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml")]
        close = difflib.get_close_matches(_normalise(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise FileNotFoundError(f"{name!r}: no config {path}.{hint}")
    return str(path)


def get_checkpoint_url(name: str) -> str:
    """URL of the official checkpoint released for config ``name`` (loads as it is released:
    knet_d2 converts it on load).

    Raises:
        KeyError: ``name`` is not in the zoo table.
        RuntimeError: no checkpoint was released for this config.
    """
    row = entry(name)
    if row.url is None:
        raise RuntimeError(
            f"{row.config}: no official checkpoint was released for this config "
            f"({row.official_config}; official {row.metric}); see MODEL_ZOO.md."
        )
    return row.url


def get_config(name: str, trained: bool = False) -> CfgNode:
    """The config of ``name`` (not frozen); with ``trained`` its ``MODEL.WEIGHTS`` is the
    official checkpoint URL, else the config's own (ImageNet) weights."""
    cfg = load_knet_cfg(get_config_file(name))
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(name)
    return cfg


def get(name: str, trained: bool = False, device: Optional[str] = None) -> torch.nn.Module:
    """Build the model of ``name`` and load its weights, as ``detectron2.model_zoo.get``.

    Args:
        name: zoo name, e.g. ``"coco/panoptic-segmentation/knet_R50_1x.yaml"``.
        trained: load the official checkpoint (downloaded once through D2's ``PathManager``
            and converted on load) and refuse it unless it fills every parameter
            (``MODEL.WEIGHTS_STRICT``); False loads the config's ImageNet weights (heads left
            initialised, as for training).
        device: e.g. "cpu" or "cuda:1"; default: the config's (CPU without CUDA).

    Returns:
        The model in eval mode (``model(list of {"image": (3, H, W) tensor, ...})``).
    """
    cfg = get_config(name, trained)
    if device is not None:
        cfg.MODEL.DEVICE = device
    model = build_model(cfg).eval()
    checkpointer = KNetCheckpointer(model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    if trained:
        check_inference_weights(
            checkpointer.last_load_report, strict=cfg.MODEL.WEIGHTS_STRICT,
            weights=cfg.MODEL.WEIGHTS,
        )
    return model
