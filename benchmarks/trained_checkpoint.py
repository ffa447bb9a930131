"""The command line of the scripts that score one trained checkpoint on a split
(``instance_error_breakdown``, ``panoptic_error_breakdown``): their arguments, and the model
built from the config with the checkpoint loaded, on the CPU."""
from __future__ import annotations

import argparse
from typing import Sequence, Tuple

import torch

__all__ = ["add_checkpoint_args", "load_checkpoint_model"]


def add_checkpoint_args(ap: argparse.ArgumentParser, default_output: str) -> None:
    """``--config-file``, ``--weights``, ``--dataset``, ``--output``, ``--threads`` and the
    trailing ``KEY VALUE`` config overrides."""
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--dataset", default=None, help="default: the config's first DATASETS.TEST")
    ap.add_argument("--output", default=default_output)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def load_checkpoint_model(a: argparse.Namespace, extra_opts: Sequence[str] = ()
                          ) -> Tuple[object, torch.nn.Module, str]:
    """``(cfg, model, dataset)``: the config of ``a.config_file`` with ``a.opts``, then
    ``extra_opts`` and ``MODEL.DEVICE cpu``; the model with ``a.weights`` loaded; the dataset
    ``a.dataset`` or the config's first test set, generated first when it is synthetic. Sets
    ``a.threads`` torch threads."""
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets
    from knet_d2.engine.checkpointer import KNetCheckpointer
    from knet_d2.engine.defaults import get_knet_cfg
    from train_net import Trainer

    torch.set_num_threads(a.threads)
    cfg = get_knet_cfg(a.config_file, list(a.opts) + list(extra_opts) + ["MODEL.DEVICE", "cpu"])
    dataset = a.dataset or cfg.DATASETS.TEST[0]
    ensure_synthetic_for_datasets([dataset])
    model = Trainer.build_model(cfg)
    KNetCheckpointer(model).load(a.weights)
    return cfg, model, dataset
