"""Inference precision and ``torch.compile`` as options of a built model.

A model's *kernel path* is the part that runs on whole padded batches (backbone, neck, kernel
head and update stages: ``KNet.forward_kernels``; backbone and ``sem_seg_head`` of Detectron2's
``SemanticSegmentor``). :func:`inference_options` wraps exactly that part:

* ``precision`` "bf16" / "fp16": the kernel path runs under :func:`torch.autocast` and its
  floating-point outputs are cast back to float32, so post-processing (mask rescaling, the
  panoptic merge, instance top-k, D2's ``sem_seg_postprocess``) always runs in fp32.
  "fp16" needs CUDA (CPU float16 kernels are slow or missing); "fp32" changes nothing.
* ``compile``: the kernel path goes through :func:`torch.compile` (one graph per padded input
  size until Dynamo switches to dynamic shapes). CPU compilation needs a C++ compiler.

The wrapping replaces the ``forward_kernels`` / ``forward`` *instance* attributes only, so
parameter names, ``state_dict`` and checkpoints are unchanged, and leaving the context (or
calling the returned ``restore``) puts the original methods back.

Config keys (``add_knet_config``): ``TEST.PRECISION``, ``TEST.COMPILE``; used by
``knet_d2.Predictor``, ``demo/demo.py`` and ``train_net.py --eval-only`` / evaluation during
training.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, List, Tuple

import torch
from detectron2.modeling import SemanticSegmentor
from torch import nn
from torch.utils._pytree import tree_map

__all__ = [
    "PRECISIONS",
    "check_precision",
    "install_inference_options",
    "inference_options",
    "kernel_path",
]

#: Inference precisions: the autocast dtype of each (``None``: no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise ``ValueError`` for an unknown precision or "fp16" on a non-CUDA device."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown inference precision {precision!r}; choose one of {tuple(PRECISIONS)} "
            "(TEST.PRECISION / --precision)"
        )
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision 'fp16' needs a CUDA device, the model is on '{device}'; use 'bf16' "
            "on the CPU (TEST.PRECISION / --precision)"
        )


def kernel_path(model: nn.Module) -> List[Tuple[Any, str]]:
    """``(owner, attribute name)`` of the methods that make up ``model``'s kernel path.

    DDP (``.module``) and D2's test-time-augmentation wrappers (``.model``) are unwrapped.

    Raises:
        TypeError: a model that is neither K-Net (``forward_kernels``) nor D2's
            ``SemanticSegmentor``.
    """
    for wrapper_attribute in ("module", "model"):  # DistributedDataParallel, D2's TTA wrappers
        inner = getattr(model, wrapper_attribute, None)
        if isinstance(inner, nn.Module):
            model = inner
    if callable(getattr(model, "forward_kernels", None)):
        return [(model, "forward_kernels")]
    if isinstance(model, SemanticSegmentor):
        return [(model.backbone, "forward"), (model.sem_seg_head, "forward")]
    raise TypeError(
        f"inference precision / compile options support K-Net and SemanticSegmentor models, "
        f"not {type(model).__name__}"
    )


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def _wrapped(fn: Callable, device_type: str, dtype: torch.dtype | None, compile: bool):
    """``fn`` under autocast (outputs cast back to fp32), then optionally compiled."""
    if dtype is not None:
        inner = fn

        def fn(*args, **kwargs):
            with torch.autocast(device_type, dtype=dtype):
                out = inner(*args, **kwargs)
            return tree_map(_to_fp32, out)

    return torch.compile(fn) if compile else fn


def install_inference_options(
    model: nn.Module, precision: str = "fp32", compile: bool = False
) -> Callable[[], None]:
    """Wrap ``model``'s kernel path for ``precision`` / ``compile`` in place.

    Args:
        model: a K-Net or ``SemanticSegmentor`` model (or its DDP wrapper), on its device.
        precision: one of :data:`PRECISIONS`.
        compile: run the kernel path through ``torch.compile``.

    Returns:
        ``restore()``: puts the original methods back.

    Raises:
        ValueError: unknown precision, or "fp16" on the CPU.
        TypeError: see :func:`kernel_path` (only when an option is on: with "fp32" and no
            compile any model is accepted and left as it is).
    """
    device = next(iter(model.parameters())).device
    check_precision(precision, device)
    dtype = PRECISIONS[precision]
    if dtype is None and not compile:
        return lambda: None
    targets = kernel_path(model)
    saved = []
    for owner, name in targets:
        had_own = name in vars(owner)
        saved.append((owner, name, had_own, vars(owner).get(name)))
        setattr(owner, name, _wrapped(getattr(owner, name), device.type, dtype, compile))

    def restore() -> None:
        for owner, name, had_own, value in reversed(saved):
            if had_own:
                setattr(owner, name, value)
            else:
                delattr(owner, name)

    return restore


@contextlib.contextmanager
def inference_options(
    model: nn.Module, precision: str = "fp32", compile: bool = False
) -> Iterator[nn.Module]:
    """Context manager form of :func:`install_inference_options`; yields ``model``."""
    restore = install_inference_options(model, precision, compile)
    try:
        yield model
    finally:
        restore()
