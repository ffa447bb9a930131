"""The demo's predictor side, shaped as detectron2's ``demo/predictor.py``.

:class:`VisualizationDemo` builds a ``knet_d2.Predictor`` (or an :class:`AsyncPredictor`) from a
config and draws its outputs on images (through :class:`knet_d2.rendering.ImageRenderer`) and on
video frames (D2's ``VideoVisualizer``). :class:`AsyncPredictor` runs predictors in worker
processes, one per GPU. Drawing rules: :mod:`knet_d2.utils.visualization`; file handling:
:mod:`knet_d2.utils.io_paths` and ``video_io.py`` next to this file.
"""
from __future__ import annotations

import atexit
import bisect
import multiprocessing as mp
import queue
from collections import deque
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode

import knet_d2  # noqa: F401  (registers KNet, its heads and the project's datasets)
from knet_d2 import Predictor  # D2's DefaultPredictor + official checkpoints + weights check
from knet_d2.engine import keep_freed_host_memory
from knet_d2.rendering import ImageRenderer, dataset_metadata

__all__ = ["AsyncPredictor", "VisualizationDemo"]

Predictions = Dict[str, Any]


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


class _StopToken:
    """Tells a worker process to exit."""


def _worker_loop(
    cfg: CfgNode,
    predictor_factory: Callable[[CfgNode], Callable[[np.ndarray], Predictions]],
    tasks: Any,
    results: Any,
) -> None:
    """Body of one :class:`AsyncPredictor` worker: predict until a :class:`_StopToken` arrives."""
    if cfg.get("KEEP_FREED_HOST_MEMORY", False):  # a spawned process: malloc starts afresh
        keep_freed_host_memory()
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
                        "every AsyncPredictor worker has exited"
                    ) from None
                if self.result_timeout is not None and waited >= self.result_timeout:
                    raise TimeoutError(
                        f"no result from the workers in {waited:.0f}s"
                    ) from None

    def get(self) -> Predictions:
        """The outputs of the oldest queued image not yet returned."""
        if self.get_idx >= self.put_idx:
            raise RuntimeError("AsyncPredictor.get() without a pending put()")
        self.get_idx += 1
        if self._ready_idx and self._ready_idx[0] == self.get_idx:
            self._ready_idx.pop(0)
            return self._ready.pop(0)
        while True:
            idx, result = self._receive()
            if isinstance(result, str):
                raise RuntimeError(f"a predictor worker failed: {result}")
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


class VisualizationDemo(ImageRenderer):
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
            task: one of :data:`knet_d2.utils.visualization.TASKS`.
            confidence_threshold: instances / thing segments scoring below it are not drawn.
            predictor: callable ``bgr image -> outputs``; default: ``knet_d2.Predictor``
                (or an :class:`AsyncPredictor` with ``parallel=True``).
            metadata: dataset metadata; default: that of ``cfg.DATASETS.TEST[0]``.
            batch_size: images / video frames per forward of the default predictor (batches
                of images that the model pads to the same size; see ``knet_d2.Predictor``).
                With ``predictor`` given it must accept a list of images when > 1.
        """
        if parallel and batch_size > 1:
            raise ValueError("--parallel runs one image per worker; use it without --batch-size")
        super().__init__(
            None, dataset_metadata(cfg) if metadata is None else metadata,
            instance_mode=instance_mode, task=task, confidence_threshold=confidence_threshold,
            batch_size=batch_size,
        )
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

    def close(self) -> None:
        """Stop the worker processes of ``parallel=True`` now (otherwise they stop at exit)."""
        if isinstance(self.predictor, AsyncPredictor):
            self.predictor.shutdown()

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

