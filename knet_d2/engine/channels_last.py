"""Channels-last training (``SOLVER.CHANNELS_LAST``).

With the switch on, :class:`knet_d2.engine.Trainer` hands the model's backbone its image batch
with channels-last strides (NHWC in memory, same (B, 3, H, W) shape) in training mode. Every
convolution after it then keeps that layout: oneDNN's direct NHWC kernels on the CPU, and the
layout tensor cores prefer under mixed precision on CUDA. The values are the same tensors, so a
step computes the same losses up to float rounding. The weights keep their memory layout (and
values), so checkpoints are as before; inference follows ``MODEL.KNET.TEST.CHANNELS_LAST`` as
before: the switch acts only while the model trains.

One detail: the gradient of a 1x1 convolution's weight (O, C, 1, 1) may then come with
channels-last strides, (C, 1, C, C), which describe the very same memory as the weight's
(C, 1, 1, 1) (strides of size-1 dimensions are free), so autograd keeps them. DDP compares
strides literally and warns that its gradient buckets do not match; a gradient hook on such
weights hands autograd the same gradient with the weight's strides (a view, no copy).

A second detail: on the CPU, PyTorch's GroupNorm on a bf16 channels-last tensor runs a slow
path: forward and backward took 1.4-3.9x as long as copying the tensor to NCHW, norming it and
copying the output back to channels-last (64 channels, 32 groups, batch 8, 16-64 px maps, 2
threads; benchmarks/RESULTS.md). While the model trains, every ``nn.GroupNorm`` (K-Net's neck
and kernel head) therefore gets such an input NCHW-contiguous and gives its output back
channels-last: the same values up to bf16 rounding. fp32 inputs, other devices and evaluation
pass unchanged.

It works for every meta-architecture the Trainer builds that has a ``backbone`` module (K-Net
and D2's ``SemanticSegmentor`` alike), since it hooks the backbone, not the model's own code.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

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


_NCHW_GROUP_NORM = "_knet_nchw_group_norm"  # flag from the pre-hook to the forward hook


def _needs_nchw_group_norm(module: nn.Module, x) -> bool:
    """Whether a training GroupNorm's input takes the slow channels-last path: a bf16 CPU
    (B, C, H, W) tensor with channels-last strides that are not also NCHW-contiguous."""
    return (
        module.training
        and torch.is_tensor(x)
        and x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.bfloat16
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


def _group_norm_input_nchw(module: nn.Module, args: tuple):
    """Forward pre-hook of a GroupNorm: such an input handed over NCHW-contiguous."""
    convert = bool(args) and _needs_nchw_group_norm(module, args[0])
    setattr(module, _NCHW_GROUP_NORM, convert)
    return (args[0].contiguous(), *args[1:]) if convert else None


def _group_norm_output_channels_last(module: nn.Module, args: tuple, output: torch.Tensor):
    """Forward hook of a GroupNorm: the output of a converted input made channels-last again."""
    if getattr(module, _NCHW_GROUP_NORM, False):
        return output.contiguous(memory_format=torch.channels_last)
    return None


def _group_norms_in_nchw(model: nn.Module) -> None:
    """The two hooks above on every ``nn.GroupNorm`` of ``model``."""
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            m.register_forward_pre_hook(_group_norm_input_nchw)
            m.register_forward_hook(_group_norm_output_channels_last)


def _view_with_strides(stride: Tuple[int, ...], grad: torch.Tensor) -> Optional[torch.Tensor]:
    """``grad`` of an (O, C, 1, 1) weight viewed with the weight's ``stride``; only when the two
    differ in the size-1 dimensions alone (the same memory), else unchanged (None)."""
    if grad.stride() == stride or grad.stride()[:2] != stride[:2]:
        return None
    return grad.as_strided(grad.shape, stride, grad.storage_offset())


def _keep_1x1_weight_strides(model: nn.Module) -> None:
    """Gradient hooks that give each (O, C, 1, 1) weight's gradient the weight's own strides
    (see the module docstring)."""
    for p in model.parameters():
        if p.requires_grad and p.dim() == 4 and p.shape[-2:] == (1, 1):
            p.register_hook(functools.partial(_view_with_strides, p.stride()))


def train_in_channels_last(model: nn.Module) -> RemovableHandle:
    """Make ``model.backbone`` receive its image batch channels-last whenever it trains.

    Call it before DDP wraps the model (the Trainer does it in ``build_model``). Returns the
    backbone hook's handle (``handle.remove()`` ends the channels-last batches; the gradient
    hooks of the 1x1 weights stay, and change nothing without them). Raises
    :class:`ConfigError` when the model has no ``backbone`` module to hand the batch to.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ConfigError(
            f"SOLVER.CHANNELS_LAST: the model ({type(model).__name__}) has no 'backbone' "
            "module to hand a channels-last image batch to; set SOLVER.CHANNELS_LAST False"
        )
    _keep_1x1_weight_strides(model)
    _group_norms_in_nchw(model)
    return backbone.register_forward_pre_hook(_channels_last_batch)
