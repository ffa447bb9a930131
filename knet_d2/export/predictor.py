"""D2-format predictions from an exported knet_d2 graph (ONNX Runtime or TorchScript).

:class:`ExportedKNetPredictor` does in Python what the exported graph leaves out, with the
model's own code, so that ``predictor(batched_inputs)`` equals ``model.eval()(batched_inputs)``:

* pre-processing: normalisation with ``pixel_mean`` / ``pixel_std`` and padding to
  ``size_divisibility`` (:func:`~knet_d2.export.knet_export.preprocess_batch`);
* KNet: :meth:`knet_d2.KNet.inference` itself (``rescale_masks`` through the padded size,
  ``instance_inference``, ``panoptic_inference``, ``semantic_inference`` of
  :mod:`knet_d2.modeling.postprocessing`), called on a plain parameter object;
* semantic: D2's ``sem_seg_postprocess`` per image, as in ``SemanticSegmentor.forward``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import Tensor

from ..data.class_layout import ClassLayout
from ..knet_model import KNet
from .knet_export import (
    EXPORT_META_VERSION,
    ONNX_METADATA_KEY,
    TS_EXTRA_FILE,
    _require,
    preprocess_batch,
)

__all__ = [
    "ExportedKNetPredictor",
    "compare_predictions",
    "read_onnx_metadata",
    "read_torchscript_metadata",
]


@dataclass
class _KNetPostprocess:
    """The attributes :meth:`KNet.inference` reads from ``self``."""

    num_thing_classes: int
    num_stuff_classes: int
    num_proposals: int
    semantic_on: bool
    instance_on: bool
    panoptic_on: bool
    mask_threshold: float
    detections_per_image: int
    instance_score_thresh: float
    overlap_threshold: float
    class_layout: Optional[ClassLayout] = None


def read_onnx_metadata(path: Union[str, Path]) -> dict:
    """The knet_d2 metadata stored in an exported ``.onnx`` file."""
    onnx = _require("onnx", "reading an exported ONNX model")
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == ONNX_METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError(
        f"{path}: no '{ONNX_METADATA_KEY}' metadata; not exported by tools/export_model.py"
    )


def read_torchscript_metadata(path: Union[str, Path]) -> dict:
    """The knet_d2 metadata stored in an exported TorchScript file (and nothing else loaded)."""
    extra = {TS_EXTRA_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[TS_EXTRA_FILE]:
        raise ValueError(
            f"{path}: no '{TS_EXTRA_FILE}' extra file; not exported by tools/export_model.py"
        )
    return json.loads(extra[TS_EXTRA_FILE])


class ExportedKNetPredictor:
    """Run an exported graph on D2 input dicts and return D2 outputs.

    Args:
        backend: an ``onnxruntime.InferenceSession`` or a TorchScript module (anything with a
            ``run(output_names, feeds)`` method is treated as an ONNX Runtime session).
        meta: the metadata dict written by the export (:func:`export_metadata`).
        device: device of the pre/post-processing and of TorchScript inputs ("cpu").

    ``predictor(batched_inputs)`` takes the same list of dicts as the model (``image`` (3, H, W)
    in ``INPUT.FORMAT`` order, optional ``height`` / ``width``) and returns per image the
    ``instances`` / ``panoptic_seg`` / ``sem_seg`` the model returns in eval mode.
    """

    def __init__(self, backend: Any, meta: dict, device: Union[str, torch.device] = "cpu"):
        if meta.get("version") not in range(1, EXPORT_META_VERSION + 1):
            raise ValueError(
                f"export metadata version {meta.get('version')!r} is not supported "
                f"(expected 1..{EXPORT_META_VERSION}); re-export with tools/export_model.py"
            )
        self.backend = backend
        self.meta = meta
        self.device = torch.device(device)
        self.is_onnx = hasattr(backend, "run") and hasattr(backend, "get_inputs")
        self.output_names: List[str] = list(meta["output_names"])
        arch = meta["meta_architecture"]
        if arch == "KNet":
            post = dict(meta["postprocess"])
            layout = post.pop("class_layout", None)  # absent in exports of things-first data
            self._post: Optional[_KNetPostprocess] = _KNetPostprocess(
                **post, class_layout=None if layout is None else ClassLayout.from_json(layout)
            )
        elif arch == "SemanticSegmentor":
            self._post = None
        else:
            raise ValueError(f"unsupported meta_architecture {arch!r} in the export metadata")

    @classmethod
    def load(
        cls,
        path: Union[str, Path],
        *,
        providers: Optional[Sequence[str]] = None,
        session_options: Any = None,
        device: Union[str, torch.device] = "cpu",
    ) -> ExportedKNetPredictor:
        """Open an exported ``.onnx`` (ONNX Runtime session) or TorchScript file.

        Args:
            path: the file written by :func:`export_onnx` / :func:`export_torchscript`.
            providers: ONNX Runtime execution providers (default CPU).
            session_options: an ``onnxruntime.SessionOptions`` (threads etc.).
            device: where TorchScript runs and the post-processing happens.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"exported model not found: {path}")
        if path.suffix == ".onnx":
            ort = _require("onnxruntime", "running an exported ONNX model")
            session = ort.InferenceSession(
                str(path), sess_options=session_options,
                providers=list(providers or ["CPUExecutionProvider"]),
            )
            # read through onnxruntime: deployment needs no `onnx` package
            meta = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
            if meta is None:
                raise ValueError(
                    f"{path}: no '{ONNX_METADATA_KEY}' metadata; not exported by "
                    "tools/export_model.py"
                )
            return cls(session, json.loads(meta), device=device)
        extra = {TS_EXTRA_FILE: ""}
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        if not extra[TS_EXTRA_FILE]:
            raise ValueError(
                f"{path}: no '{TS_EXTRA_FILE}' extra file; not exported by "
                "tools/export_model.py (ONNX files must end in .onnx)"
            )
        return cls(module.eval(), json.loads(extra[TS_EXTRA_FILE]), device=device)

    # ------------------------------------------------------------------ steps
    def preprocess(self, batched_inputs: List[dict]) -> ImageList:
        """Normalised padded batch (B, 3, Hp, Wp) exactly as the PyTorch model builds it."""
        m = self.meta
        return preprocess_batch(
            batched_inputs, m["pixel_mean"], m["pixel_std"], m["size_divisibility"],
            m["padding_constraints"], device=self.device,
        )

    def _check_shape(self, images: Tensor) -> None:
        expected = tuple(self.meta["input_shape"])
        if not self.meta["dynamic"] and tuple(images.shape) != expected:
            raise ValueError(
                f"the exported graph has the static input shape {expected} but the padded "
                f"batch is {tuple(images.shape)}: re-export with --dynamic, or feed batches "
                "of that size"
            )

    @torch.no_grad()
    def run_raw(self, images: Tensor) -> Dict[str, Tensor]:
        """Run the graph on a normalised padded batch; returns ``output name -> tensor``."""
        self._check_shape(images)
        if self.is_onnx:
            feeds = {self.meta["input_name"]: images.detach().cpu().numpy().astype(np.float32)}
            outs = self.backend.run(self.output_names, feeds)
            outs = [torch.from_numpy(o).to(self.device) for o in outs]
        else:
            out = self.backend(images.to(self.device))
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(self.output_names):
            raise RuntimeError(
                f"the exported graph returned {len(outs)} outputs, expected "
                f"{self.output_names}"
            )
        return dict(zip(self.output_names, outs))

    def postprocess(
        self, raw: Dict[str, Tensor], batched_inputs: List[dict], images: ImageList
    ) -> List[Dict[str, Any]]:
        """Raw graph outputs -> per-image D2 outputs, with the PyTorch model's own code."""
        if self._post is not None:
            last = {"cls_logits": raw["cls_logits"], "mask_logits": raw["mask_logits"]}
            # KNet.inference only reads the attributes of _KNetPostprocess from `self`: the
            # exported model is post-processed by the very code the PyTorch model runs.
            return KNet.inference(self._post, last, batched_inputs, images)
        results = []
        logits = raw["sem_seg_logits"]
        for result, x, size in zip(logits, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            results.append({"sem_seg": sem_seg_postprocess(result, size, height, width)})
        return results

    def __call__(self, batched_inputs: List[dict]) -> List[Dict[str, Any]]:
        """D2 inputs -> D2 outputs (see the class docstring)."""
        images = self.preprocess(batched_inputs)
        return self.postprocess(self.run_raw(images.tensor), batched_inputs, images)


def compare_predictions(
    reference: List[Dict[str, Any]], exported: List[Dict[str, Any]]
) -> List[str]:
    """Human-readable comparison of two lists of D2 outputs (one line per image and output).

    Panoptic: differing pixels of the id maps and whether ``segments_info`` agree (ids,
    categories, ``isthing``; max score difference). Instances: classes equal, differing mask
    pixels, max score difference. Semantic: pixels whose argmax differs, max value difference.
    """
    lines = []
    for i, (ref, got) in enumerate(zip(reference, exported)):
        if "panoptic_seg" in ref:
            (ids_r, info_r), (ids_e, info_e) = ref["panoptic_seg"], got["panoptic_seg"]
            key = [(s["id"], s["category_id"], s["isthing"]) for s in info_r]
            same = key == [(s["id"], s["category_id"], s["isthing"]) for s in info_e]
            score = max(
                (abs(a["score"] - b["score"]) for a, b in zip(info_r, info_e)), default=0.0
            )
            lines.append(
                f"image {i} panoptic_seg: {int((ids_r != ids_e).sum())} / {ids_r.numel()} "
                f"pixels differ; {len(info_r)} segments, segments_info "
                f"{'equal' if same else 'DIFFERENT'} (max score diff {score:.3g})"
            )
        if "instances" in ref:
            a, b = ref["instances"], got["instances"]
            if len(a) != len(b):
                lines.append(f"image {i} instances: {len(a)} vs {len(b)} detections")
            else:
                classes = torch.equal(a.pred_classes, b.pred_classes)
                score = (a.scores - b.scores).abs().max().item() if len(a) else 0.0
                lines.append(
                    f"image {i} instances: {len(a)} detections, classes "
                    f"{'equal' if classes else 'DIFFERENT'}, "
                    f"{int((a.pred_masks != b.pred_masks).sum())} mask pixels differ, "
                    f"max score diff {score:.3g}"
                )
        if "sem_seg" in ref:
            a, b = ref["sem_seg"], got["sem_seg"]
            lines.append(
                f"image {i} sem_seg {tuple(a.shape)}: "
                f"{int((a.argmax(0) != b.argmax(0)).sum())} argmax pixels differ, "
                f"max abs diff {(a - b).abs().max().item():.3g}"
            )
    return lines
