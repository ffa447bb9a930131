"""The traceable part of a knet_d2 model: wrappers that map the normalised, padded image batch
to the final-stage tensors, and the ONNX-friendly replacement of adaptive average pooling.

What goes into the graph is the network only::

    KNet (instance / panoptic):
        images (B, 3, Hp, Wp) -> cls_logits (B, N, T+S), mask_logits (B, N, Hp/4, Wp/4)
    SemanticSegmentor (semantic K-Net and the plain decode heads):
        images (B, 3, Hp, Wp) -> sem_seg_logits (B, K, Hp', Wp')   (Hp' = Hp for stride-aligned
                                                                    inputs)

``N = Np + S`` kernels (things first), ``Hp, Wp`` the padded size. Normalisation, padding and
everything after the graph (sigmoid, top-k, rescaling through the padded size, panoptic merge,
D2 ``Instances`` / ``panoptic_seg`` / ``sem_seg``) stay in Python:
:class:`~knet_d2.export.predictor.ExportedKNetPredictor` runs them with the model's own code.

The only op the TorchScript-based ONNX exporter cannot convert is ``adaptive_avg_pool2d`` with
an output size that does not divide the input size (the PPM of PSPNet / UPerNet);
:func:`make_onnx_exportable` swaps those pools for :class:`ExportableAdaptiveAvgPool2d`, which
computes the same average with two matrix products (float32 rounding differences only).
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from detectron2.modeling import SemanticSegmentor
from detectron2.structures import ImageList
from torch import Tensor, nn

from ..knet_model import KNet

__all__ = [
    "SUPPORTED_META_ARCHITECTURES",
    "UnsupportedModelError",
    "KNetExportWrapper",
    "SemSegExportWrapper",
    "ExportableAdaptiveAvgPool2d",
    "build_export_wrapper",
    "make_onnx_exportable",
    "reference_outputs",
]

SUPPORTED_META_ARCHITECTURES = ("KNet", "SemanticSegmentor")


class UnsupportedModelError(ValueError):
    """The model's meta-architecture has no export wrapper."""


class KNetExportWrapper(nn.Module):
    """Traceable :class:`~knet_d2.KNet` graph: backbone, neck, kernel head, all update stages.

    ``forward(images (B, 3, Hp, Wp)) -> (cls_logits (B, N, T+S), mask_logits (B, N, Hp/4,
    Wp/4))``: the last stage of :meth:`KNet.forward_kernels`, i.e. exactly the tensors
    :meth:`KNet.inference` post-processes. ``Hp, Wp`` must be multiples of the model's
    ``size_divisibility``. The data-dependent parts of the network are tensor ops (hard masks
    ``sigmoid > thr``), so the trace is valid for every input of a stride-aligned size.
    """

    output_names: Tuple[str, ...] = ("cls_logits", "mask_logits")
    #: dynamic axes of the outputs in a ``--dynamic`` ONNX export
    output_axes: Dict[str, Dict[int, str]] = {
        "cls_logits": {0: "batch"},
        "mask_logits": {0: "batch", 2: "mask_height", 3: "mask_width"},
    }

    def __init__(self, model: KNet):
        super().__init__()
        if len(model.update_heads) == 0:
            raise UnsupportedModelError("KNet with MODEL.KNET.NUM_STAGES 0 has no final stage")
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        # forward_kernels reads only .tensor; the sizes are never used by it.
        image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])
        _, stages = self.model.forward_kernels(image_list)
        last = stages[-1]
        return last["cls_logits"], last["mask_logits"]


class SemSegExportWrapper(nn.Module):
    """Traceable D2 ``SemanticSegmentor`` graph: ``backbone`` then ``sem_seg_head`` (inference).

    ``forward(images (B, 3, Hp, Wp)) -> sem_seg_logits (B, K, Hp', Wp')``, the head's output at
    the padded input resolution (``KNetSemSegHead``: last-stage logits upsampled by the
    generation head's stride), which D2 crops and resizes per image
    (``sem_seg_postprocess``).
    """

    output_names: Tuple[str, ...] = ("sem_seg_logits",)
    output_axes: Dict[str, Dict[int, str]] = {
        "sem_seg_logits": {0: "batch", 2: "logits_height", 3: "logits_width"}
    }

    def __init__(self, model: SemanticSegmentor):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        features = self.model.backbone(images)
        logits, _ = self.model.sem_seg_head(features, None)
        return logits


def build_export_wrapper(model: nn.Module) -> nn.Module:
    """The traceable wrapper of ``model`` (:class:`KNetExportWrapper` or
    :class:`SemSegExportWrapper`); raises :class:`UnsupportedModelError` for other models."""
    if isinstance(model, KNet):
        return KNetExportWrapper(model)
    if isinstance(model, SemanticSegmentor):
        return SemSegExportWrapper(model)
    raise UnsupportedModelError(
        f"cannot export a {type(model).__name__}: supported meta-architectures are "
        f"{', '.join(SUPPORTED_META_ARCHITECTURES)} (K-Net instance / panoptic and semantic)"
    )


@torch.no_grad()
def reference_outputs(model: nn.Module, images: Tensor) -> Dict[str, Tensor]:
    """The PyTorch values of the exported graph's outputs for ``images`` (B, 3, Hp, Wp)."""
    wrapper = build_export_wrapper(model)
    was_training = model.training
    model.eval()
    try:
        out = wrapper(images)
    finally:
        model.train(was_training)
    out = out if isinstance(out, tuple) else (out,)
    return dict(zip(wrapper.output_names, out))


def _adaptive_pool_matrix(n: Union[int, Tensor], out: int, like: Tensor) -> Tensor:
    """(out, n) averaging matrix of PyTorch's adaptive average pooling along one axis.

    Bin ``i`` covers ``[floor(i * n / out), ceil((i + 1) * n / out))``. ``n`` may be a traced
    size, so the matrix follows the input size in exported graphs.
    """
    idx = torch.arange(out, device=like.device)
    start = torch.div(idx * n, out, rounding_mode="floor")
    end = torch.div((idx + 1) * n + out - 1, out, rounding_mode="floor")
    pos = torch.arange(n, device=like.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two matrix products, exportable for any input size.

    ``forward(x (..., h, w)) -> (..., oh, ow)`` = ``P_h @ x @ P_w^T`` with the averaging
    matrices of :func:`_adaptive_pool_matrix`. Same bins as PyTorch; values differ only by
    float rounding (summation order).
    """

    def __init__(self, output_size: Union[int, Sequence[Optional[int]]]):
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        if len(size) != 2 or any(s is None for s in size):
            raise ValueError(f"output_size must be an int or two ints, got {output_size!r}")
        self.output_size = (int(size[0]), int(size[1]))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph = _adaptive_pool_matrix(h, self.output_size[0], x)  # (oh, h)
        pw = _adaptive_pool_matrix(w, self.output_size[1], x)  # (ow, w)
        return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def make_onnx_exportable(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every ``nn.AdaptiveAvgPool2d`` whose output is
    not 1x1 replaced by :class:`ExportableAdaptiveAvgPool2d` (the global pools export as
    ``GlobalAveragePool`` already). ``model`` itself is not modified."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                size = child.output_size
                if size not in (1, (1, 1)):
                    setattr(module, name, ExportableAdaptiveAvgPool2d(size))
    return model
