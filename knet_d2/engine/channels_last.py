"""Channels-last training (``SOLVER.CHANNELS_LAST``).

With the switch on, :class:`knet_d2.engine.Trainer` hands the model's backbone its image batch
with channels-last strides (NHWC in memory, same (B, 3, H, W) shape) in training mode. Every
convolution after it then keeps that layout: oneDNN's direct NHWC kernels on the CPU, and the
layout tensor cores prefer under mixed precision on CUDA. The values are the same tensors, so a
step computes the same losses up to float rounding. Parameters, optimizer state and checkpoints
are untouched (the weights keep their layout), and inference follows
``MODEL.KNET.TEST.CHANNELS_LAST`` as before: the switch acts only while the model trains.

It works for every meta-architecture the Trainer builds that has a ``backbone`` module (K-Net
and D2's ``SemanticSegmentor`` alike), since it hooks the backbone, not the model's own code.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..config import ConfigError

__all__ = ["train_in_channels_last"]


def _channels_last_batch(module: nn.Module, args: tuple):
    """Forward pre-hook: the first argument, a (B, C, H, W) batch, made channels-last while
    ``module`` trains; any other call passes unchanged."""
    if not module.training or not args or not torch.is_tensor(args[0]) or args[0].dim() != 4:
        return None
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def train_in_channels_last(model: nn.Module) -> RemovableHandle:
    """Make ``model.backbone`` receive its image batch channels-last whenever it trains.

    Returns the hook's handle (``handle.remove()`` undoes it). Raises :class:`ConfigError`
    when the model has no ``backbone`` module to hand the batch to.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ConfigError(
            f"SOLVER.CHANNELS_LAST: the model ({type(model).__name__}) has no 'backbone' "
            "module to hand a channels-last image batch to; set SOLVER.CHANNELS_LAST False"
        )
    return backbone.register_forward_pre_hook(_channels_last_batch)
