"""ONNX and TorchScript export of knet_d2 models (docs/EXPORT.md): the export metadata, the
pre-processing the graph expects, and the export functions.

The graph is the traceable wrapper of :mod:`knet_d2.export.traceable` (normalised, padded
images -> final-stage tensors); everything else is described by the metadata dict
(:func:`export_metadata`) stored inside the exported file.

ONNX export uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it
ships with torch and needs only the ``onnx`` package, while the dynamo exporter (torch >= 2.9
default) also needs ``onnxscript``. Pools it cannot convert are swapped by
:func:`~knet_d2.export.traceable.make_onnx_exportable` first.
"""
from __future__ import annotations

import copy
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from detectron2.config import CfgNode
from detectron2.structures import ImageList
from torch import Tensor, nn

from ..knet_model import KNet
from .deploy_info import deployment_info
from .traceable import build_export_wrapper, make_onnx_exportable, reference_outputs

__all__ = [
    "EXPORT_META_VERSION",
    "INPUT_NAME",
    "MIN_OPSET",
    "MAX_OPSET",
    "ONNX_METADATA_KEY",
    "TS_EXTRA_FILE",
    "export_metadata",
    "preprocess_params",
    "preprocess_batch",
    "export_onnx",
    "export_torchscript",
]

logger = logging.getLogger(__name__)

#: Version of the metadata dict written next to / into the exported file.
EXPORT_META_VERSION = 2  # 2: adds the ``input`` / ``dataset`` / ``classes`` sections
INPUT_NAME = "images"
#: The issue asks for opset >= 17; 20 is the newest the TorchScript-based exporter writes.
MIN_OPSET = 17
try:
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as MAX_OPSET
except ImportError:  # pragma: no cover - private constant moved
    MAX_OPSET = 20
#: key of ``onnx.ModelProto.metadata_props`` / name of the TorchScript extra file holding the
#: metadata JSON, so that an exported file is self-describing.
ONNX_METADATA_KEY = "knet_d2_export"
TS_EXTRA_FILE = "knet_d2_export.json"


# -------------------------------------------------------------------------------- metadata
def preprocess_params(model: nn.Module) -> dict:
    """Normalisation and padding exactly as the model's own ``forward`` does them: the keyword
    arguments of :func:`preprocess_batch` (``pixel_mean``, ``pixel_std``,
    ``size_divisibility``, ``padding_constraints``)."""
    if isinstance(model, KNet):
        size_div, constraints = model.size_divisibility, None
    else:
        size_div = model.backbone.size_divisibility
        constraints = dict(getattr(model.backbone, "padding_constraints", {}) or {}) or None
    return {
        "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in model.pixel_std.flatten()],
        "size_divisibility": int(size_div),
        "padding_constraints": constraints,
    }


def export_metadata(
    model: nn.Module, *, fmt: str, input_shape: Sequence[int], dynamic: bool,
    opset: Optional[int] = None, cfg: Optional[CfgNode] = None,
) -> dict:
    """Everything :class:`~knet_d2.export.predictor.ExportedKNetPredictor` needs besides the
    graph: pre-processing, output names, post-processing parameters and the export settings.

    Args:
        model: the PyTorch model being exported.
        fmt: "onnx" or "torchscript".
        input_shape: (B, 3, Hp, Wp) of the tracing input.
        dynamic: whether the graph accepts other batch sizes / spatial sizes.
        opset: ONNX opset (None for TorchScript).
        cfg: the model's config; when given, the metadata also records the input channel
            order, the test resize and the class table (:func:`deployment_info`), which the
            torch-free runtime ``knet_onnx`` needs.
    """
    wrapper = build_export_wrapper(model)
    meta = {
        "version": EXPORT_META_VERSION,
        "format": fmt,
        "meta_architecture": type(model).__name__,
        "input_name": INPUT_NAME,
        "output_names": list(wrapper.output_names),
        "input_shape": [int(v) for v in input_shape],
        "dynamic": bool(dynamic),
        "opset": opset,
        "torch_version": torch.__version__,
        **preprocess_params(model),
    }
    if isinstance(model, KNet):
        meta["postprocess"] = {
            "num_thing_classes": model.num_thing_classes,
            "num_stuff_classes": model.num_stuff_classes,
            "num_proposals": model.num_proposals,
            "semantic_on": model.semantic_on,
            "instance_on": model.instance_on,
            "panoptic_on": model.panoptic_on,
            "mask_threshold": model.mask_threshold,
            "detections_per_image": model.detections_per_image,
            "instance_score_thresh": model.instance_score_thresh,
            "overlap_threshold": model.overlap_threshold,
            "class_layout": None if model.class_layout is None else model.class_layout.to_json(),
        }
    else:
        meta["postprocess"] = {"num_classes": int(getattr(model.sem_seg_head, "num_classes", -1))}
    if cfg is not None:
        meta.update(deployment_info(cfg, meta["postprocess"]))
    return meta


def preprocess_batch(
    batched_inputs: List[dict],
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    size_divisibility: int,
    padding_constraints: Optional[dict] = None,
    device: Union[str, torch.device] = "cpu",
) -> ImageList:
    """Normalise and pad D2 input dicts like ``KNet.preprocess_image`` / ``SemanticSegmentor``.

    Args:
        batched_inputs: dicts with ``image`` (3, H, W) in ``INPUT.FORMAT`` channel order.

    Returns:
        ImageList of the float (B, 3, Hp, Wp) padded batch and the per-image (H, W).
    """
    mean = torch.tensor(pixel_mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32, device=device).view(-1, 1, 1)
    images = [(x["image"].to(device) - mean) / std for x in batched_inputs]
    return ImageList.from_tensors(
        images, size_divisibility, padding_constraints=padding_constraints
    )



# ---------------------------------------------------------------------------------- export
@contextmanager
def _tracing_context() -> Iterator[None]:
    """No-grad tracing with ``nn.MultiheadAttention``'s inference fast path off.

    The fast path (``aten::_native_multi_head_attention``, taken under no_grad) has no ONNX
    symbolic; the regular path exports as plain MatMul / Softmax. Also silences the expected
    tracing chatter: TracerWarnings for the shape checks in the model (shape-only, identical
    for every stride-aligned input), and the deprecation notes of ``torch.jit.trace`` / the
    TorchScript-based ONNX exporter, which are still the ones that need no extra package.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated.*")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _check_shape_generic_trace(model: nn.Module, images: Tensor) -> None:
    """Refuse a tracing size that would bake a size-specific branch into a dynamic graph.

    The decode heads skip the "resize back" after an adaptive pool when the pooled map
    already has the input's size (PPM scale s on an s x s stride-32 map). Traced at such a
    size, the graph lacks that resize and fails or is wrong at every other size.
    """
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        return
    hits: List[str] = []

    def hook(module: nn.Module, inputs: Tuple[Tensor, ...]) -> None:
        size = module.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(inputs[0].shape[-2:]) == size:
            hits.append(f"{size[0]}x{size[1]}")

    handles = [m.register_forward_pre_hook(hook) for m in pools]
    try:
        reference_outputs(model, images)
    finally:
        for h in handles:
            h.remove()
    if hits:
        raise ValueError(
            f"cannot trace a shape-generic graph at input size {tuple(images.shape[-2:])}: "
            f"an adaptive pool of output size {hits[0]} gets an input of that same size, so "
            "the trace would lose the resize after it; trace at another size (e.g. a "
            "non-square image) or export a static graph"
        )


def _require(module: str, purpose: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs the '{module}' package, which is not installed: "
            f"pip install {module}  (tools/install_deps.sh installs it)"
        ) from e


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.float32:
        raise ValueError(
            f"export input must be a float32 (B, 3, H, W) batch, got {images.dtype} "
            f"{tuple(images.shape)}"
        )


def export_onnx(
    model: nn.Module,
    images: Tensor,
    path: Union[str, Path],
    *,
    opset: int = MIN_OPSET,
    dynamic: bool = False,
    cfg: Optional[CfgNode] = None,
) -> dict:
    """Export ``model`` to an ONNX file traced with ``images``; returns the metadata.

    Args:
        model: a built KNet or SemanticSegmentor (left unchanged; a copy is exported).
        images: (B, 3, Hp, Wp) float32 normalised padded batch (see :func:`preprocess_batch`).
        path: output ``.onnx`` file (overwritten; the CLI guards against that).
        opset: ONNX opset, ``MIN_OPSET``..``MAX_OPSET``.
        dynamic: make batch, height and width dynamic axes; otherwise the graph only accepts
            ``images.shape``.
        cfg: the model's config, to record what the torch-free runtime needs
            (:func:`export_metadata`).

    The metadata dict (:func:`export_metadata`) is also stored as JSON in the model's
    ``metadata_props`` under :data:`ONNX_METADATA_KEY`.
    """
    onnx = _require("onnx", "ONNX export")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    _check_images(images)
    meta = export_metadata(
        model, fmt="onnx", input_shape=images.shape, dynamic=dynamic, opset=opset, cfg=cfg
    )
    if dynamic:
        _check_shape_generic_trace(model, images)
    wrapper = build_export_wrapper(make_onnx_exportable(model)).eval()
    names = list(wrapper.output_names)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        dynamic_axes.update(wrapper.output_axes)
    path = str(path)
    with _tracing_context():
        torch.onnx.export(
            wrapper,
            (images,),
            path,
            dynamo=False,  # TorchScript-based exporter: needs no onnxscript
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    logger.info("Exported %s to %s (opset %d, dynamic=%s)", meta["meta_architecture"], path,
                opset, dynamic)
    return meta


def export_torchscript(
    model: nn.Module, images: Tensor, path: Union[str, Path], cfg: Optional[CfgNode] = None
) -> dict:
    """Trace ``model`` with ``images`` (``torch.jit.trace``) and save it; returns the metadata.

    The traced module maps ``images (B, 3, Hp, Wp)`` to the same outputs as the ONNX graph
    (a tuple for KNet, one tensor for semantic models). Shapes are recorded symbolically by the
    tracer, so other batch / spatial sizes work (``meta["dynamic"]`` is True). The metadata
    JSON is saved inside the file as the extra file :data:`TS_EXTRA_FILE`.
    """
    _check_images(images)
    meta = export_metadata(
        model, fmt="torchscript", input_shape=images.shape, dynamic=True, cfg=cfg
    )
    _check_shape_generic_trace(model, images)
    wrapper = build_export_wrapper(copy.deepcopy(model).eval()).eval()
    with _tracing_context():
        traced = torch.jit.trace(wrapper, (images,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TS_EXTRA_FILE: json.dumps(meta)})
    logger.info("Exported %s to %s (TorchScript trace)", meta["meta_architecture"], path)
    return meta
