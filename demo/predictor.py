"""Reusable parts of the K-Net demo: drawing, input/output handling, video codecs, async inference.

``demo/demo.py`` is the command line on top of this module; ``make quickstart`` calls
:func:`render_predictions`. Everything here is importable without a display.

Conventions followed (see docs/architecture.md §9 and §13):

* a model output dict holds any of ``panoptic_seg`` ``(ids (H, W), segments_info)``,
  ``instances`` (``pred_masks``, ``scores``, ``pred_classes``, ``pred_boxes``) and ``sem_seg``
  ``(C, H, W)``; class ids are the dataset's contiguous ids (for panoptic metadata they index
  ``stuff_classes``, which lists every class; thing ids are the values of
  ``thing_dataset_id_to_contiguous_id``);
* the confidence threshold only changes what is drawn, never the model;
* D2's ``Visualizer`` looks thing names up as ``thing_classes[category_id]``, which breaks when
  thing ids do not come first: :func:`drawing_metadata` builds a view where that lookup is valid.
"""
from __future__ import annotations

import atexit
import bisect
import contextlib
import copy
import glob
import logging
import multiprocessing as mp
import os
import queue
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer
from tqdm import tqdm

import knet_d2  # noqa: F401  (registers KNet, its heads and the project's datasets)
from knet_d2 import Predictor  # D2's DefaultPredictor + official checkpoints + weights check
from knet_d2.data.image_io import read_image  # D2's, with clear errors and 16-bit
from knet_d2.modeling.postprocessing import masks_to_boxes

__all__ = [
    "IMAGE_EXTENSIONS",
    "TASKS",
    "VIDEO_CODEC_CANDIDATES",
    "AsyncPredictor",
    "RunSummary",
    "VisualizationDemo",
    "drawing_metadata",
    "expand_inputs",
    "filter_instances",
    "filter_panoptic",
    "image_output_paths",
    "output_is_directory",
    "probe_video_codec",
    "render_predictions",
    "run_on_images",
    "select_task",
    "video_output_path",
    "write_video",
]

logger = logging.getLogger("knet_d2.demo")

#: File name suffixes treated as images when a directory is given as input.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Drawing targets: ``auto`` picks panoptic, then instances, then semantic.
TASKS = ("auto", "panoptic", "instance", "semantic")
#: (fourcc, container suffix) tried in order by :func:`probe_video_codec`. pip's OpenCV wheels
#: ship no x264 encoder, so the later entries are what usually works there.
VIDEO_CODEC_CANDIDATES: Tuple[Tuple[str, str], ...] = (
    ("x264", ".mkv"),
    ("avc1", ".mp4"),
    ("mp4v", ".mp4"),
    ("MJPG", ".avi"),
)

PathLike = Union[str, os.PathLike]
Predictions = Dict[str, Any]


# ------------------------------------------------------------------------------------ metadata
def drawing_metadata(metadata: Metadata) -> Metadata:
    """A metadata view on which D2's visualizers can index ``thing_classes[category_id]``.

    D2's ``Visualizer.draw_panoptic_seg`` and ``VideoVisualizer`` look a thing's name and colour
    up as ``thing_classes[category_id]`` / ``thing_colors[category_id]``, where ``category_id``
    is the contiguous id of the whole dataset. That is only right when the thing ids are
    ``0..T-1`` (COCO); with stuff classes first (ADE20K panoptic) it raises ``IndexError`` or
    draws wrong names. When the thing ids are not ``0..T-1`` this returns a new, unregistered
    :class:`Metadata` with the same fields, except that ``thing_classes``/``thing_colors`` are
    indexed by contiguous id (names of non-thing ids come from ``stuff_classes``). Otherwise the
    metadata is returned unchanged.

    Args:
        metadata: the dataset's metadata (``MetadataCatalog.get(name)``).

    Returns:
        ``metadata`` itself, or the re-indexed view.

    Raises:
        ValueError: ``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` disagree in length.
    """
    thing_map = metadata.get("thing_dataset_id_to_contiguous_id", None)
    things = metadata.get("thing_classes", None)
    if not thing_map or not things:
        return metadata
    thing_ids = sorted(int(v) for v in thing_map.values())
    if thing_ids == list(range(len(thing_ids))):
        return metadata
    if len(thing_ids) != len(things):
        raise ValueError(
            f"demo/predictor.py: metadata of '{metadata.name}' has {len(things)} thing_classes "
            f"but {len(thing_ids)} ids in thing_dataset_id_to_contiguous_id; they must match"
        )
    stuff = list(metadata.get("stuff_classes", None) or [])
    size = max(thing_ids[-1] + 1, len(stuff))
    names = [stuff[i] if i < len(stuff) else str(i) for i in range(size)]
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    stuff_colors = metadata.get("stuff_colors", None)
    colors = [
        list(stuff_colors[i]) if stuff_colors is not None and i < len(stuff_colors)
        else palette[i % len(palette)]
        for i in range(size)
    ]
    thing_colors = metadata.get("thing_colors", None)
    # thing_classes[k] is the thing with the k-th smallest contiguous id (D2 and M2F registrations
    # enumerate categories in one order for both).
    for k, cid in enumerate(thing_ids):
        names[cid] = things[k]
        if thing_colors is not None and k < len(thing_colors):
            colors[cid] = list(thing_colors[k])
    fields = metadata.as_dict()
    fields.update(
        name=f"{metadata.name} (thing ids re-indexed for drawing)",
        thing_classes=names,
        thing_colors=colors,
    )
    return Metadata(**fields)


# ------------------------------------------------------------------------------------ filtering
def filter_instances(instances: Instances, threshold: float) -> Instances:
    """Instances with ``score >= threshold`` on the CPU, ready for D2's visualizers.

    Soft masks are binarised at 0.5, and boxes are computed from the masks when the model gives
    none or only empty ones (mask-based models often emit zero boxes), because D2's drawing uses
    them for label placement and ``VideoVisualizer`` needs them for colour tracking.

    Args:
        instances: a model's ``instances`` output.
        threshold: minimum score kept; instances without ``scores`` are all kept.

    Returns:
        A new :class:`Instances`; the input is not modified.
    """
    out = instances.to(torch.device("cpu"))
    if out.has("scores") and len(out) > 0:
        out = out[out.scores >= threshold]
    if out.has("pred_masks"):
        masks = out.pred_masks
        if not isinstance(masks, torch.Tensor):
            masks = torch.as_tensor(np.asarray(masks))
        if masks.dtype != torch.bool:
            masks = masks > 0.5 if masks.is_floating_point() else masks > 0
        out.pred_masks = masks
        no_boxes = not out.has("pred_boxes") or bool((out.pred_boxes.area() <= 0).all())
        if len(out) > 0 and no_boxes:
            out.pred_boxes = masks_to_boxes(masks)
    if len(out) == 0 and not out.has("pred_boxes"):
        out.pred_boxes = Boxes(torch.zeros((0, 4)))
    return out


def filter_panoptic(
    panoptic_seg: torch.Tensor, segments_info: Optional[List[dict]], threshold: float
) -> Tuple[torch.Tensor, Optional[List[dict]]]:
    """Drop thing segments scoring below ``threshold`` from a panoptic output (drawing only).

    Pixels of the dropped segments become void: they get the id the output already uses for
    unlabelled pixels, or a fresh unused id, so D2's ``_PanopticPrediction`` sees a single void id.
    Stuff segments and segments without ``"score"`` are kept.

    Args:
        panoptic_seg: ``(H, W)`` integer segment ids.
        segments_info: per-segment dicts (``id``, ``category_id``, ``isthing``, optional
            ``score``), or ``None`` (label-divisor format: returned unchanged).
        threshold: minimum score of a thing segment.

    Returns:
        ``(panoptic_seg, segments_info)``: CPU copies; the inputs are not modified.
    """
    seg = panoptic_seg.to("cpu").clone()
    if segments_info is None:
        return seg, None
    infos = [copy.deepcopy(s) for s in segments_info]
    for s in infos:
        if isinstance(s.get("score"), torch.Tensor):
            s["score"] = float(s["score"])
    keep, drop = [], []
    for s in infos:
        low = s.get("isthing", False) and s.get("score") is not None and s["score"] < threshold
        (drop if low else keep).append(s)
    if drop:
        labelled = {int(s["id"]) for s in infos}
        present = [int(v) for v in torch.unique(seg).tolist()]
        void = [v for v in present if v not in labelled]
        void_id = void[0] if void else (0 if 0 not in labelled else max(labelled) + 1)
        for s in drop:
            seg[seg == int(s["id"])] = void_id
    return seg, keep


def select_task(predictions: Predictions, task: str = "auto") -> str:
    """Which output of ``predictions`` to draw: ``panoptic_seg``, ``instances`` or ``sem_seg``.

    Args:
        predictions: one model output dict.
        task: one of :data:`TASKS`; ``auto`` prefers panoptic, then instances, then semantic.

    Raises:
        ValueError: unknown task, or the model did not produce the requested output.
    """
    keys = {"panoptic": "panoptic_seg", "instance": "instances", "semantic": "sem_seg"}
    if task == "auto":
        for key in ("panoptic_seg", "instances", "sem_seg"):
            if key in predictions:
                return key
        raise ValueError(
            "demo/predictor.py: the model output has none of 'panoptic_seg', 'instances', "
            f"'sem_seg' (keys: {sorted(predictions)})"
        )
    if task not in keys:
        raise ValueError(f"demo/predictor.py: unknown task {task!r}; choose one of {TASKS}")
    if keys[task] not in predictions:
        raise ValueError(
            f"demo/predictor.py: --task {task} needs '{keys[task]}' in the model output, which has "
            f"{sorted(predictions)}; enable it in the config (MODEL.KNET.TEST.*_ON) or use "
            "--task auto"
        )
    return keys[task]


def _predictions_to_cpu(predictions: Predictions) -> Predictions:
    """Move every tensor of a model output to the CPU (for queues between processes)."""
    out: Predictions = {}
    for key, value in predictions.items():
        if isinstance(value, (torch.Tensor, Instances)):
            out[key] = value.to(torch.device("cpu"))
        elif key == "panoptic_seg":
            seg, infos = value
            out[key] = (seg.to("cpu"), infos)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------ async
class _StopToken:
    """Tells a worker process to exit."""


def _worker_loop(
    cfg: CfgNode,
    predictor_factory: Callable[[CfgNode], Callable[[np.ndarray], Predictions]],
    tasks: Any,
    results: Any,
) -> None:
    """Body of one :class:`AsyncPredictor` worker: predict until a :class:`_StopToken` arrives."""
    try:
        predictor = predictor_factory(cfg)
    except Exception as e:  # report instead of leaving the parent waiting forever
        results.put((-1, f"{type(e).__name__}: {e}"))
        return
    while True:
        task = tasks.get()
        if isinstance(task, _StopToken):
            break
        idx, image = task
        try:
            results.put((idx, _predictions_to_cpu(predictor(image))))
        except Exception as e:
            results.put((idx, f"{type(e).__name__}: {e}"))


class AsyncPredictor:
    """Run predictors in worker processes, one per GPU (one CPU worker without GPUs).

    ``put(image)`` queues a BGR image, ``get()`` returns the outputs in the order of ``put``.
    Outputs come back on the CPU. Workers use the ``spawn`` start method, so
    ``predictor_factory`` must be picklable (a class or module-level function).
    """

    def __init__(
        self,
        cfg: CfgNode,
        num_gpus: int = 1,
        predictor_factory: Callable[[CfgNode], Callable] = Predictor,
        result_timeout: Optional[float] = None,
    ) -> None:
        """
        Args:
            cfg: the config; each worker gets a copy with its own ``MODEL.DEVICE``.
            num_gpus: workers on ``cuda:0..num_gpus-1``; 0 = one worker on the CPU.
            predictor_factory: ``cfg -> callable(bgr image) -> outputs`` (default:
                ``knet_d2.Predictor``, which runs as D2's ``DefaultPredictor``).
            result_timeout: give up waiting for one result after this many seconds
                (``None``: wait as long as the workers are alive).
        """
        num_workers = max(int(num_gpus), 1)
        ctx = mp.get_context("spawn")
        self.task_queue = ctx.Queue(maxsize=num_workers * 3)
        # Unbounded: a worker never blocks on a result, so put() cannot deadlock against get().
        self.result_queue = ctx.Queue()
        self.procs = []
        for i in range(num_workers):
            worker_cfg = cfg.clone()
            worker_cfg.defrost()
            worker_cfg.MODEL.DEVICE = f"cuda:{i}" if num_gpus > 0 else "cpu"
            proc = ctx.Process(
                target=_worker_loop,
                args=(worker_cfg, predictor_factory, self.task_queue, self.result_queue),
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
        self.put_idx = 0
        self.get_idx = 0
        self.result_timeout = result_timeout
        self._ready_idx: List[int] = []
        self._ready: List[Predictions] = []
        self._closed = False
        atexit.register(self.shutdown)

    def put(self, image: np.ndarray) -> None:
        """Queue one BGR image."""
        self.put_idx += 1
        self.task_queue.put((self.put_idx, image))

    def _receive(self) -> Tuple[int, Any]:
        waited = 0.0
        while True:
            try:
                return self.result_queue.get(timeout=1.0)
            except queue.Empty:
                waited += 1.0
                if not any(p.is_alive() for p in self.procs):
                    raise RuntimeError(
                        "demo/predictor.py: every AsyncPredictor worker has exited"
                    ) from None
                if self.result_timeout is not None and waited >= self.result_timeout:
                    raise TimeoutError(
                        f"demo/predictor.py: no result from the workers in {waited:.0f}s"
                    ) from None

    def get(self) -> Predictions:
        """The outputs of the oldest queued image not yet returned."""
        if self.get_idx >= self.put_idx:
            raise RuntimeError("demo/predictor.py: AsyncPredictor.get() without a pending put()")
        self.get_idx += 1
        if self._ready_idx and self._ready_idx[0] == self.get_idx:
            self._ready_idx.pop(0)
            return self._ready.pop(0)
        while True:
            idx, result = self._receive()
            if isinstance(result, str):
                raise RuntimeError(f"demo/predictor.py: a predictor worker failed: {result}")
            if idx == self.get_idx:
                return result
            pos = bisect.bisect(self._ready_idx, idx)
            self._ready_idx.insert(pos, idx)
            self._ready.insert(pos, result)

    def __len__(self) -> int:
        return self.put_idx - self.get_idx

    def __call__(self, image: np.ndarray) -> Predictions:
        self.put(image)
        return self.get()

    def shutdown(self) -> None:
        """Stop the workers (called at exit too); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for _ in self.procs:
            try:
                self.task_queue.put(_StopToken(), timeout=1.0)
            except queue.Full:
                break
        for proc in self.procs:
            proc.join(timeout=5.0)
            if proc.is_alive():  # still starting up (slow spawn under load) or stuck
                proc.terminate()
                proc.join(timeout=5.0)

    @property
    def default_buffer_size(self) -> int:
        """How many frames to keep in flight when streaming video."""
        return len(self.procs) * 5


def _threshold_below(score: float) -> float:
    """A two-decimal threshold at or below ``score`` (0.2137 -> 0.21)."""
    return max(0.0, int(score * 100) / 100)


# ------------------------------------------------------------------------------------ demo
class VisualizationDemo:
    """Run a predictor on images or video frames and draw the result with D2's visualizers."""

    def __init__(
        self,
        cfg: CfgNode,
        *,
        instance_mode: ColorMode = ColorMode.IMAGE,
        parallel: bool = False,
        task: str = "auto",
        confidence_threshold: float = 0.5,
        predictor: Optional[Callable[[np.ndarray], Predictions]] = None,
        metadata: Optional[Metadata] = None,
        batch_size: int = 1,
    ) -> None:
        """
        Args:
            cfg: the model config (as ``train_net.py`` builds it); ``TEST.PRECISION`` and
                ``TEST.COMPILE`` choose the default predictor's precision and compilation.
            instance_mode: D2 colour mode for drawing.
            parallel: use an :class:`AsyncPredictor` with one worker per visible GPU.
            task: one of :data:`TASKS`.
            confidence_threshold: instances / thing segments scoring below it are not drawn.
            predictor: callable ``bgr image -> outputs``; default: ``knet_d2.Predictor``
                (or an :class:`AsyncPredictor` with ``parallel=True``).
            metadata: dataset metadata; default: that of ``cfg.DATASETS.TEST[0]``.
            batch_size: images / video frames per forward of the default predictor (batches
                of images that the model pads to the same size; see ``knet_d2.Predictor``).
                With ``predictor`` given it must accept a list of images when > 1.
        """
        if batch_size < 1:
            raise ValueError(f"demo/predictor.py: batch size must be >= 1, got {batch_size}")
        if parallel and batch_size > 1:
            raise ValueError(
                "demo/predictor.py: --parallel runs one image per worker; use it without "
                "--batch-size"
            )
        if task not in TASKS:
            raise ValueError(f"demo/predictor.py: unknown task {task!r}; choose one of {TASKS}")
        if metadata is None:
            name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused"
            metadata = MetadataCatalog.get(name)
        self.metadata = metadata
        self.draw_metadata = drawing_metadata(metadata)
        self.instance_mode = instance_mode
        self.task = task
        self.confidence_threshold = float(confidence_threshold)
        self.parallel = parallel and predictor is None
        if predictor is None:
            if parallel:
                predictor = AsyncPredictor(
                    cfg, num_gpus=torch.cuda.device_count(), predictor_factory=Predictor
                )
            else:
                # as D2's DefaultPredictor, plus official checkpoints converted on load and
                # weights that leave parameters random refused (MODEL.WEIGHTS_STRICT)
                batching = {"batch_size": batch_size} if batch_size > 1 else {}
                predictor = Predictor(cfg, **batching)
        self.predictor = predictor
        self.batch_size = batch_size

    # ------------------------------------------------------------ preparation
    def prepare(self, predictions: Predictions) -> Tuple[str, Any]:
        """Pick what to draw and apply the confidence threshold.

        Returns:
            ``(key, payload)``: ``("panoptic_seg", (seg, segments_info))``,
            ``("instances", Instances)`` or ``("sem_seg", labels (H, W))``, all on the CPU.
        """
        key = select_task(predictions, self.task)
        if key == "panoptic_seg":
            seg, infos = predictions["panoptic_seg"]
            return key, filter_panoptic(seg, infos, self.confidence_threshold)
        if key == "instances":
            return key, filter_instances(predictions["instances"], self.confidence_threshold)
        sem = predictions["sem_seg"]
        labels = sem.argmax(dim=0) if sem.dim() == 3 else sem
        return key, labels.to("cpu")

    @staticmethod
    def describe(key: str, payload: Any) -> str:
        """A short text for the log, e.g. ``"3 instances"``."""
        if key == "instances":
            return f"{len(payload)} instances"
        if key == "panoptic_seg":
            infos = payload[1]
            return "panoptic segments" if infos is None else f"{len(infos)} panoptic segments"
        return f"{len(torch.unique(payload))} semantic classes"

    def nothing_drawn_hint(self, predictions: Predictions, key: str, payload: Any) -> Optional[str]:
        """When the threshold left no instance / thing segment to draw: the best score the
        model gave and a ``--confidence-threshold`` that would draw it; else ``None``."""
        if key == "instances":
            if len(payload):
                return None
            inst = predictions["instances"]
            scores = inst.scores if inst.has("scores") else None
        elif key == "panoptic_seg":
            infos = payload[1]
            if infos is None or any(s.get("isthing") for s in infos):
                return None
            dropped = [float(s["score"]) for s in predictions["panoptic_seg"][1] or []
                       if s.get("isthing") and s.get("score") is not None]
            if not dropped and "instances" in predictions:
                inst = predictions["instances"]
                if not inst.has("scores") or len(inst) == 0:
                    return None
                best = float(inst.scores.max())
                return (
                    f"no thing segment drawn: the panoptic merge kept no instance (it needs "
                    f"MODEL.KNET.TEST.INSTANCE_SCORE_THRESH); best instance score {best:.3f}, try "
                    f"--task instance --confidence-threshold {_threshold_below(best):.2f}"
                )
            scores = torch.tensor(dropped) if dropped else None
        else:
            return None
        if scores is None or len(scores) == 0:
            return None
        best = float(scores.max())
        return (
            f"nothing drawn: best score {best:.3f} is below --confidence-threshold "
            f"{self.confidence_threshold:g}; try --confidence-threshold "
            f"{_threshold_below(best):.2f}"
        )

    # ------------------------------------------------------------ images
    def draw(self, image_rgb: np.ndarray, key: str, payload: Any) -> VisImage:
        """Draw a prepared output (see :meth:`prepare`) on an RGB image."""
        vis = Visualizer(image_rgb, self.draw_metadata, instance_mode=self.instance_mode)
        if key == "panoptic_seg":
            return vis.draw_panoptic_seg(*payload)
        if key == "instances":
            return vis.draw_instance_predictions(payload)
        return vis.draw_sem_seg(payload)

    def run_on_image(self, image_bgr: np.ndarray) -> Tuple[Predictions, VisImage]:
        """Predict and draw one image.

        Args:
            image_bgr: ``(H, W, 3)`` uint8 BGR image (as ``read_image(path, format="BGR")``).

        Returns:
            ``(predictions, vis)``: the raw model outputs (unfiltered) and the drawing.
        """
        predictions = self.predictor(image_bgr)
        key, payload = self.prepare(predictions)
        return predictions, self.draw(image_bgr[:, :, ::-1], key, payload)

    # ------------------------------------------------------------ video
    def _draw_frame(
        self, video_vis: VideoVisualizer, frame_bgr: np.ndarray, predictions: Predictions
    ) -> np.ndarray:
        key, payload = self.prepare(predictions)
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        if key == "panoptic_seg":
            vis = video_vis.draw_panoptic_seg_predictions(rgb, *payload)
        elif key == "instances":
            vis = video_vis.draw_instance_predictions(rgb, payload)
        else:
            vis = video_vis.draw_sem_seg(rgb, payload)
        return cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)

    def run_on_video(
        self, frames: Union[cv2.VideoCapture, Iterable[np.ndarray]]
    ) -> Iterator[np.ndarray]:
        """Predict and draw every frame; yields BGR frames in input order.

        Args:
            frames: an opened ``cv2.VideoCapture`` or any iterable of BGR frames.
        """
        mode = self.instance_mode
        if mode not in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            mode = ColorMode.IMAGE  # the only modes VideoVisualizer supports
        video_vis = VideoVisualizer(self.draw_metadata, mode)
        source = _iter_capture(frames) if isinstance(frames, cv2.VideoCapture) else iter(frames)
        if isinstance(self.predictor, AsyncPredictor):
            pending: deque = deque()
            size = self.predictor.default_buffer_size
            for frame in source:
                pending.append(frame)
                self.predictor.put(frame)
                if len(pending) >= size:
                    yield self._draw_frame(video_vis, pending.popleft(), self.predictor.get())
            while pending:
                yield self._draw_frame(video_vis, pending.popleft(), self.predictor.get())
        elif self.batch_size > 1:  # frames of a video share their size: full batches
            batch: List[np.ndarray] = []
            for frame in source:
                batch.append(frame)
                if len(batch) == self.batch_size:
                    for image, predictions in zip(batch, self.predictor(batch)):
                        yield self._draw_frame(video_vis, image, predictions)
                    batch = []
            if batch:
                for image, predictions in zip(batch, self.predictor(batch)):
                    yield self._draw_frame(video_vis, image, predictions)
        else:
            for frame in source:
                yield self._draw_frame(video_vis, frame, self.predictor(frame))


def _iter_capture(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Frames of an opened capture until it runs out."""
    while capture.isOpened():
        ok, frame = capture.read()
        if not ok:
            break
        yield frame


# ------------------------------------------------------------------------------------ inputs
def expand_inputs(patterns: Sequence[PathLike]) -> List[Path]:
    """Turn ``--input`` values into a list of files.

    Each value may be a file, a directory (its files with an :data:`IMAGE_EXTENSIONS` suffix,
    sorted, not recursive) or a glob pattern (``**`` recurses). Duplicates are removed, order kept.

    Raises:
        FileNotFoundError: a value matches nothing (the message names it).
    """
    files: List[Path] = []
    for pattern in patterns:
        p = Path(pattern).expanduser()
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise FileNotFoundError(
                    f"demo: input directory {p} has no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(m) for m in glob.glob(str(p), recursive=True) if Path(m).is_file())
            if not found:
                raise FileNotFoundError(f"demo: input {pattern!s} matches no file")
        files.extend(found)
    unique: Dict[Path, None] = {}
    for f in files:
        unique.setdefault(f, None)
    return list(unique)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _refuse_inputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    resolved = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in resolved or any(_same_path(out, i) for i in inputs):
            raise ValueError(
                f"demo: refusing to write {out}: it is one of the inputs; pick another --output"
            )


def output_is_directory(output: PathLike, n_inputs: int = 1) -> bool:
    """Whether ``--output`` means a directory: it exists as one, ends with a path separator,
    has no suffix, or more than one input is given."""
    text = os.fspath(output)
    path = Path(text).expanduser()
    return path.is_dir() or text.endswith(("/", os.sep)) or path.suffix == "" or n_inputs > 1


def image_output_paths(inputs: Sequence[Path], output: PathLike) -> List[Path]:
    """Output file of each input image, creating the output directory when missing.

    ``output`` is a directory when it exists as one, ends with a separator, has no suffix or more
    than one input is given; files are then named after the inputs (``_1``, ``_2``... added on
    name clashes). Otherwise it is the single output file.

    Raises:
        ValueError: an output would overwrite an input, or OpenCV cannot write the suffix.
    """
    is_dir = output_is_directory(output, len(inputs))
    output = Path(output).expanduser()
    if not inputs:
        return []
    if is_dir:
        if output.exists() and not output.is_dir():
            raise ValueError(
                f"demo: --output {output} is a file but {len(inputs)} inputs were given; "
                "pass a directory"
            )
        outs, used = [], set()
        for inp in inputs:
            suffix = inp.suffix.lower() if inp.suffix.lower() in IMAGE_EXTENSIONS else ".png"
            name, n = inp.stem + suffix, 0
            while name in used:
                n += 1
                name = f"{inp.stem}_{n}{suffix}"
            used.add(name)
            outs.append(output / name)
    else:
        if not cv2.haveImageWriter(str(output)):
            raise ValueError(
                f"demo: OpenCV cannot write images named like {output} (end --output with '/' "
                "to mean a directory)"
            )
        outs = [output]
    _refuse_inputs(outs, inputs)
    outs[0].parent.mkdir(parents=True, exist_ok=True)
    return outs


def video_output_path(video: Path, output: PathLike, suffix: str) -> Path:
    """Output file for a video: ``output/<video stem><suffix>`` or ``output`` itself.

    When ``output`` names a file whose suffix differs from the container that works
    (``suffix``, from :func:`probe_video_codec`), the suffix is replaced and a warning logged.

    Raises:
        ValueError: the output would overwrite the input video.
    """
    is_dir = output_is_directory(output, 1)
    output = Path(output).expanduser()
    if is_dir:
        out = output / (video.stem + suffix)
    else:
        out = output
        if output.suffix.lower() != suffix:
            out = output.with_suffix(suffix)
            logger.warning(
                "No working video codec for %s files here; writing %s instead", output.suffix, out
            )
    _refuse_inputs([out], [video])
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------------ video codec
def _codec_works(fourcc: str, suffix: str, frame_size: Tuple[int, int]) -> bool:
    """Write 3 frames with ``fourcc`` into a temp ``suffix`` file and read one back."""
    w, h = frame_size
    with tempfile.TemporaryDirectory(prefix="knet_codec_") as tmp:
        path = os.path.join(tmp, "probe" + suffix)
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10.0, (w, h), True)
        try:
            if not writer.isOpened():
                return False
            for i in range(3):
                writer.write(np.full((h, w, 3), 40 * i, dtype=np.uint8))
        finally:
            writer.release()
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            return False
        cap = cv2.VideoCapture(path)
        try:
            ok, frame = cap.read()
        finally:
            cap.release()
        return bool(ok) and frame is not None and frame.shape[:2] == (h, w)


@contextlib.contextmanager
def _opencv_log_silenced() -> Iterator[None]:
    """Silence OpenCV's own log (its FFMPEG "Could not find encoder" ERROR lines) inside."""
    if not (hasattr(cv2, "getLogLevel") and hasattr(cv2, "setLogLevel")):
        yield  # an OpenCV build without the log-level bindings
        return
    previous = cv2.getLogLevel()
    cv2.setLogLevel(0)  # cv::utils::logging::LOG_LEVEL_SILENT
    try:
        yield
    finally:
        cv2.setLogLevel(previous)


def probe_video_codec(
    frame_size: Tuple[int, int] = (64, 64),
    candidates: Sequence[Tuple[str, str]] = VIDEO_CODEC_CANDIDATES,
    prefer_suffix: Optional[str] = None,
) -> Tuple[str, str]:
    """The first ``(fourcc, suffix)`` that really writes a readable video here.

    Each candidate is tested by writing a few frames of ``frame_size`` to a temp file and reading
    it back with ``cv2.VideoCapture`` (an opened writer alone proves nothing: without x264 OpenCV
    may still create an empty file).

    Args:
        frame_size: ``(width, height)`` of the frames to be written.
        candidates: ``(fourcc, suffix)`` pairs in order of preference.
        prefer_suffix: try candidates with this container suffix first (e.g. ``".mp4"`` when
            the user named ``out.mp4``).

    Raises:
        RuntimeError: no candidate works (the message lists them).
    """
    order = list(candidates)
    if prefer_suffix:
        order.sort(key=lambda c: c[1].lower() != prefer_suffix.lower())
    with _opencv_log_silenced():  # a failing candidate is expected, not an error
        for i, (fourcc, suffix) in enumerate(order):
            if _codec_works(fourcc, suffix, frame_size):
                if i > 0:
                    logger.info(
                        "Video codec %s unusable with this OpenCV; using %s (%s)",
                        "/".join(f"{c}{s}" for c, s in order[:i]), fourcc, suffix,
                    )
                return fourcc, suffix
    logger.error("No video codec works; OpenCV's own messages for %s follow", order[0][0])
    _codec_works(order[0][0], order[0][1], frame_size)  # again, with OpenCV's log on
    raise RuntimeError(
        "demo/predictor.py: OpenCV cannot write video with any of "
        f"{', '.join(f'{c} ({s})' for c, s in order)}; install an OpenCV build with FFMPEG"
    )


def write_video(
    frames: Iterable[np.ndarray], path: Path, fourcc: str, fps: float, frame_size: Tuple[int, int]
) -> int:
    """Write BGR frames to ``path``; returns the number written.

    Raises:
        RuntimeError: the writer cannot be opened, a frame has the wrong size, or the file is
            empty afterwards.
    """
    w, h = frame_size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h), True)
    if not writer.isOpened():
        raise RuntimeError(f"demo: cannot open a {fourcc} video writer for {path}")
    n = 0
    try:
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise RuntimeError(
                    f"demo: frame {n} of {path} is {frame.shape[1]}x{frame.shape[0]}, "
                    f"expected {w}x{h}"
                )
            writer.write(np.ascontiguousarray(frame))
            n += 1
    finally:
        writer.release()
    if n > 0 and (not path.is_file() or path.stat().st_size == 0):
        raise RuntimeError(f"demo: video writer produced an empty file {path}")
    return n


# ------------------------------------------------------------------------------------ batch runs
@dataclass
class RunSummary:
    """Outcome of a batch run: files written and ``(input, reason)`` of failures."""

    written: List[Path] = field(default_factory=list)
    failed: List[Tuple[Path, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{len(self.written)} written, {len(self.failed)} failed"


def run_on_images(
    demo: VisualizationDemo,
    inputs: Sequence[Path],
    outputs: Optional[Sequence[Path]],
    *,
    show: Optional[Callable[[Path, np.ndarray], bool]] = None,
    progress: Optional[bool] = None,
) -> RunSummary:
    """Predict, draw and save (or show) each image; a failing image is logged and skipped.

    With ``demo.batch_size`` > 1 the images are read and predicted ``batch_size`` at a time
    (one model call on the list); when that call fails, every image of the batch is failed.

    Args:
        demo: the demo to run.
        inputs: image files.
        outputs: output file per input (see :func:`image_output_paths`), or ``None`` to only
            call ``show``.
        show: ``(path, bgr drawing) -> keep going`` when not saving.
        progress: tqdm bar (``None``: only for more than one image).

    Returns:
        The :class:`RunSummary` (also logged).
    """
    summary = RunSummary()
    batch_size = getattr(demo, "batch_size", 1)  # demo-like objects may lack it
    bar = tqdm(
        total=len(inputs), desc="images", unit="img",
        disable=(len(inputs) <= 1) if progress is None else not progress,
    )
    batch: List[Tuple[int, Path, np.ndarray]] = []
    position = 0
    while position < len(inputs) or batch:
        while position < len(inputs) and len(batch) < batch_size:  # fill a batch
            path = inputs[position]
            try:
                batch.append((position, path, read_image(str(path), format="BGR")))
            except Exception as e:
                logger.error("Cannot read image %s: %s: %s", path, type(e).__name__, e)
                summary.failed.append((path, f"unreadable: {e}"))
                bar.update(1)
            position += 1
        if not batch:
            break
        start = time.perf_counter()
        try:
            if batch_size > 1:
                all_predictions = demo.predictor([image for _, _, image in batch])
            else:
                all_predictions = [demo.predictor(batch[0][2])]
        except Exception as e:
            logger.exception("Inference failed on %s", ", ".join(str(p) for _, p, _ in batch))
            summary.failed += [(p, f"{type(e).__name__}: {e}") for _, p, _ in batch]
            bar.update(len(batch))
            batch = []
            continue
        seconds = (time.perf_counter() - start) / len(batch)
        for (i, path, image), predictions in zip(batch, all_predictions):
            bar.update(1)
            if not _draw_and_save(demo, path, image, predictions, seconds, summary, show,
                                  outputs[i] if outputs is not None else None):
                position = len(inputs)  # show() asked to stop
                break
        batch = []
    bar.close()
    logger.info("Summary: %s", summary)
    for path, reason in summary.failed:
        logger.info("  failed: %s (%s)", path, reason)
    return summary


def _draw_and_save(
    demo: VisualizationDemo,
    path: Path,
    image: np.ndarray,
    predictions: Predictions,
    seconds: float,
    summary: RunSummary,
    show: Optional[Callable[[Path, np.ndarray], bool]],
    out: Optional[Path],
) -> bool:
    """Draw one image's predictions, then write them to ``out`` (recorded in ``summary``) or
    ``show`` them; returns False when ``show`` asks to stop."""
    start = time.perf_counter()
    try:
        key, payload = demo.prepare(predictions)
        drawing = demo.draw(image[:, :, ::-1], key, payload).get_image()[:, :, ::-1]
    except Exception as e:
        logger.exception("Drawing failed on %s", path)
        summary.failed.append((path, f"{type(e).__name__}: {e}"))
        return True
    logger.info(
        "%s: %s drawn in %.2fs", path, demo.describe(key, payload),
        seconds + time.perf_counter() - start,
    )
    hint_of = getattr(demo, "nothing_drawn_hint", None)  # demo-like objects may lack it
    hint = hint_of(predictions, key, payload) if hint_of is not None else None
    if hint:
        logger.warning("%s: %s", path, hint)
    if out is None:
        return show is None or bool(show(path, drawing))
    if not cv2.imwrite(str(out), np.ascontiguousarray(drawing)):
        logger.error("Cannot write %s", out)
        summary.failed.append((path, f"cannot write {out}"))
        return True
    summary.written.append(out)
    return True


def render_predictions(
    cfg: CfgNode,
    model_weights: Optional[PathLike],
    image_paths: Sequence[PathLike],
    output_dir: PathLike,
    *,
    confidence_threshold: float = 0.5,
    task: str = "auto",
    predictor: Optional[Callable[[np.ndarray], Predictions]] = None,
    strict: bool = True,
) -> List[Path]:
    """Draw a model's predictions on images and save them into ``output_dir``.

    Meant for scripts (``make quickstart``): builds a ``knet_d2.Predictor`` from ``cfg`` with
    ``MODEL.WEIGHTS = model_weights``, draws each image as ``demo/demo.py`` does and writes
    ``output_dir/<input name>`` (created when missing).

    Args:
        cfg: model config (not modified; a clone gets the weights).
        model_weights: checkpoint path/URL; ``None`` keeps ``cfg.MODEL.WEIGHTS``.
        image_paths: image files (anything :func:`expand_inputs` accepts).
        output_dir: directory for the drawings.
        confidence_threshold: instances / thing segments below it are not drawn.
        task: one of :data:`TASKS`.
        predictor: use this callable instead of building ``knet_d2.Predictor``.
        strict: raise if any image fails (otherwise failures are only logged).

    Returns:
        The written files, in input order.

    Raises:
        RuntimeError: with ``strict``, when an image could not be read, predicted or written.
    """
    cfg = cfg.clone()
    cfg.defrost()
    if model_weights is not None:
        cfg.MODEL.WEIGHTS = str(model_weights)
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    if not image_paths:
        raise ValueError("demo/predictor.py: render_predictions got no image paths")
    inputs = expand_inputs(image_paths)
    out_dir = Path(output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = image_output_paths(inputs, out_dir)
    demo = VisualizationDemo(
        cfg, task=task, confidence_threshold=confidence_threshold, predictor=predictor
    )
    summary = run_on_images(demo, inputs, outputs, progress=False)
    if strict and summary.failed:
        details = "; ".join(f"{p}: {r}" for p, r in summary.failed)
        raise RuntimeError(f"demo/predictor.py: render_predictions failed on {details}")
    return summary.written
