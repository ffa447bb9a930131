"""An exported knet_d2 model on ONNX Runtime, from image to predictions, without PyTorch.

    model = KNetOnnxModel.load("export/panoptic")          # a directory or a .onnx file
    pred = model.predict(cv2.imread("photo.jpg"))          # BGR uint8 (H, W, 3)
    ids, segments_info = pred["panoptic_seg"]

Steps (each as the PyTorch model / D2's ``DefaultPredictor`` does them): BGR -> the graph's
channel order, shortest-edge test resize (PIL bilinear), normalisation, padding, the graph,
then the post-processing of :mod:`knet_onnx.postprocess` at the original image size.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort

from .image_ops import normalize_and_pad, pil_bilinear_resize, shortest_edge_size
from .postprocess import (
    instance_inference,
    panoptic_inference,
    rescale_masks,
    semantic_inference,
    semantic_segmentor_postprocess,
)
from .spec import ExportSpec

__all__ = ["KNetOnnxModel", "MODEL_FILE_NAME", "available_cpus"]

#: file name tools/export_model.py gives the graph inside its --output directory
MODEL_FILE_NAME = "model.onnx"


def available_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


class KNetOnnxModel:
    """An ONNX Runtime session plus the metadata that turns its outputs into predictions.

    Predictions use D2's output keys with numpy values: ``panoptic_seg`` = ((H, W) int32 ids,
    segments_info), ``instances`` = dict of ``pred_masks`` (n, H, W) bool, ``scores``,
    ``pred_classes``, ``pred_boxes`` (n, 4) XYXY, and ``sem_seg`` (K, H, W) float32 scores.
    Class ids are contiguous ids, described by ``spec.classes``.
    """

    def __init__(self, session: Any, spec: ExportSpec, threads: Optional[int] = None):
        """``threads``: threads of the numpy / OpenCV post-processing (default: the CPUs
        this process may run on)."""
        self.session = session
        self.spec = spec
        self.threads = threads if threads is not None else available_cpus()

    @classmethod
    def load(
        cls,
        path: Union[str, Path],
        *,
        providers: Optional[Sequence[str]] = None,
        session_options: Optional[ort.SessionOptions] = None,
        threads: Optional[int] = None,
    ) -> KNetOnnxModel:
        """Open ``path`` (a ``.onnx`` file, or the export directory holding ``model.onnx``).

        Args:
            providers: ONNX Runtime execution providers (default: CPU).
            session_options: the graph's thread counts etc.
            threads: threads of the post-processing (default: the CPUs available).
        """
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"exported model not found: {path}")
        session = ort.InferenceSession(
            str(path), sess_options=session_options,
            providers=list(providers or ["CPUExecutionProvider"]),
        )
        return cls(session, ExportSpec.from_session(session, str(path)), threads)

    # ------------------------------------------------------------------------------ steps
    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 (H, W, 3) -> the graph's channel order, resized for testing (h, w, 3)."""
        if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(
                f"expected a BGR uint8 (H, W, 3) image, got {image_bgr.dtype} {image_bgr.shape}"
            )
        image = image_bgr[:, :, ::-1] if self.spec.channel_order == "RGB" else image_bgr
        if self.spec.min_size_test > 0:
            size = shortest_edge_size(
                image.shape[0], image.shape[1], self.spec.min_size_test, self.spec.max_size_test
            )
            image = pil_bilinear_resize(np.ascontiguousarray(image), size)
        return np.ascontiguousarray(image)

    def pad_batch(self, images: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
        """Prepared images (:meth:`prepare`) -> the normalised, padded (B, 3, Hp, Wp) float32
        batch the graph takes, and each image's (h, w) inside it."""
        spec = self.spec
        return normalize_and_pad(
            images, spec.pixel_mean, spec.pixel_std, spec.size_divisibility,
            spec.padding_constraints,
        )

    def run_graph(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """The graph on a normalised, padded (B, 3, Hp, Wp) float32 batch: name -> array."""
        if not self.spec.dynamic and list(batch.shape) != self.spec.input_shape:
            raise ValueError(
                f"{self.spec.path}: the graph has the static input shape "
                f"{tuple(self.spec.input_shape)} but the padded batch is {batch.shape}: "
                "re-export with --dynamic"
            )
        outputs = self.session.run(self.spec.output_names, {self.spec.input_name: batch})
        return dict(zip(self.spec.output_names, outputs))

    def predict_prepared(
        self, images: Sequence[np.ndarray], output_sizes: Sequence[Tuple[int, int]]
    ) -> List[Dict[str, Any]]:
        """Predictions for images already in the graph's channel order and test size.

        Args:
            images: (h_i, w_i, 3) uint8, batched into one padded input.
            output_sizes: (H_i, W_i) the predictions are resized to (the original sizes).
        """
        spec = self.spec
        batch, sizes = self.pad_batch(images)
        raw = self.run_graph(batch)
        padded = tuple(batch.shape[-2:])
        results = []
        for i, (size, out_size) in enumerate(zip(sizes, output_sizes)):
            out_size = (int(out_size[0]), int(out_size[1]))
            if spec.is_knet:
                results.append(self._knet_outputs(
                    raw["cls_logits"][i], raw["mask_logits"][i], padded, size, out_size
                ))
            else:
                results.append({"sem_seg": semantic_segmentor_postprocess(
                    raw["sem_seg_logits"][i], size, out_size
                )})
        return results

    def _knet_outputs(self, cls_logits, mask_logits, padded, size, out_size) -> Dict[str, Any]:
        post = self.spec.postprocess
        np_, t = post["num_proposals"], post["num_thing_classes"]
        probs = rescale_masks(mask_logits, padded, size, out_size, threads=self.threads)
        result: Dict[str, Any] = {}
        if post["instance_on"]:
            result["instances"] = instance_inference(
                cls_logits[:np_], probs[:np_], t, max_per_image=post["detections_per_image"],
                mask_threshold=post["mask_threshold"],
            )
        if post["panoptic_on"]:
            result["panoptic_seg"] = panoptic_inference(
                cls_logits, probs, num_things=t, num_stuff=post["num_stuff_classes"],
                num_proposals=np_, instance_score_thresh=post["instance_score_thresh"],
                overlap_thresh=post["overlap_threshold"], mask_threshold=post["mask_threshold"],
                threads=self.threads,
            )
        if post["semantic_on"]:
            result["sem_seg"] = semantic_inference(cls_logits, probs)
        return result

    def predict(self, image_bgr: np.ndarray) -> Dict[str, Any]:
        """Predictions for one BGR uint8 (H, W, 3) image (e.g. ``cv2.imread``), at its size."""
        prepared = self.prepare(image_bgr)
        return self.predict_prepared([prepared], [image_bgr.shape[:2]])[0]
