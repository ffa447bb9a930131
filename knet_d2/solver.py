"""Optimizer construction for K-Net: AdamW/SGD, backbone LR multiplier, full-model clipping.

The official K-Net recipe (docs/reference.md §2.4): AdamW lr 1e-4, weight decay 0.05 on every
parameter (no norm/bias exemption: set ``SOLVER.WEIGHT_DECAY_NORM`` equal to ``WEIGHT_DECAY``),
LR x0.25 for every parameter whose name contains ``backbone``, and gradients clipped by one
global L2 norm (max 1.0) over the whole model (``SOLVER.CLIP_GRADIENTS.CLIP_TYPE: full_model``).
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, Type

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

__all__ = ["build_knet_optimizer", "add_full_model_gradient_clipping"]

# Swin position tables get SOLVER.WEIGHT_DECAY_EMBED (official: no decay).
_EMBED_KEYS = ("relative_position_bias_table", "absolute_pos_embed")


def add_full_model_gradient_clipping(
    optim_cls: Type[torch.optim.Optimizer], clip_norm: float, norm_type: float = 2.0
) -> Type[torch.optim.Optimizer]:
    """Return a subclass of ``optim_cls`` whose ``step`` first clips the global gradient norm."""

    class FullModelGradientClippingOptimizer(optim_cls):
        def step(self, closure=None):
            all_params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(all_params, clip_norm, norm_type=norm_type)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = f"FullModelClipped{optim_cls.__name__}"
    return FullModelGradientClippingOptimizer


def _param_groups(cfg: CfgNode, model: torch.nn.Module) -> List[Dict[str, Any]]:
    mult = cfg.SOLVER.BACKBONE_MULTIPLIER
    overrides = {k: {"weight_decay": cfg.SOLVER.WEIGHT_DECAY_EMBED} for k in _EMBED_KEYS}
    return get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        overrides=overrides,
        lr_factor_func=lambda name: mult if "backbone" in name else 1.0,
    )


def _fused_adamw_supported(model: torch.nn.Module) -> bool:
    """Whether ``AdamW(fused=True)`` works for every parameter of ``model``.

    The fused kernel (CUDA, and CPU since torch 2.4) updates all tensors in one call; on the
    synthetic CPU configs it makes the optimizer step faster than the per-tensor loop.
    """
    devices = {p.device.type for p in model.parameters() if p.requires_grad}
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    if not devices or not dtypes <= {torch.float32, torch.float16, torch.bfloat16, torch.float64}:
        return False
    if devices == {"cuda"}:
        return True
    return devices == {"cpu"} and torch.__version__ >= "2.4"


def build_knet_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer named by ``SOLVER.OPTIMIZER`` ("ADAMW" or "SGD")."""
    params = _param_groups(cfg, model)
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        optim_cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
        if _fused_adamw_supported(model):
            kwargs["fused"] = True
    elif name == "SGD":
        optim_cls = torch.optim.SGD
        kwargs = {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got '{cfg.SOLVER.OPTIMIZER}'")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0:
        optim_cls = add_full_model_gradient_clipping(optim_cls, clip.CLIP_VALUE, clip.NORM_TYPE)
        return optim_cls(params, lr=cfg.SOLVER.BASE_LR, **kwargs)
    optimizer = optim_cls(params, lr=cfg.SOLVER.BASE_LR, **kwargs)
    if clip.ENABLED and clip.CLIP_TYPE != "full_model":
        optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    return optimizer
