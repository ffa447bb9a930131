"""Predict and draw image files: the renderer behind ``demo/demo.py`` and ``make quickstart``.

:class:`ImageRenderer` pairs a predictor (``bgr image -> outputs``, e.g. ``knet_d2.Predictor``)
with a :class:`~knet_d2.utils.visualization.PredictionDrawer`; :func:`run_on_images` runs one
over a list of files (batched, failures logged and skipped); :func:`render_predictions` is the
one-call version for scripts. Files to read and write come from :mod:`knet_d2.utils.io_paths`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import ColorMode, VisImage
from tqdm import tqdm

from knet_d2.data.image_io import read_image  # D2's, with clear errors and 16-bit
from knet_d2.predictor import Predictor
from knet_d2.utils.io_paths import PathLike, expand_inputs, image_output_paths
from knet_d2.utils.visualization import PredictionDrawer, check_task

__all__ = [
    "ImageRenderer",
    "RunSummary",
    "dataset_metadata",
    "render_predictions",
    "run_on_images",
]

logger = logging.getLogger(__name__)

Predictions = Dict[str, Any]


def dataset_metadata(cfg: CfgNode) -> Metadata:
    """Metadata of ``cfg.DATASETS.TEST[0]`` (where the class names come from), as D2's demo."""
    return MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")


class ImageRenderer(PredictionDrawer):
    """A predictor and a :class:`PredictionDrawer`: predicts and draws one image at a time."""

    def __init__(
        self,
        predictor: Optional[Callable[[Any], Any]],
        metadata: Metadata,
        *,
        instance_mode: ColorMode = ColorMode.IMAGE,
        task: str = "auto",
        confidence_threshold: float = 0.5,
        batch_size: int = 1,
    ) -> None:
        """
        Args:
            predictor: callable ``bgr image -> outputs``; with ``batch_size`` > 1 it must also
                accept a list of images and return a list of outputs. ``None``: a subclass
                sets ``self.predictor`` after this (e.g. once the arguments are checked).
            metadata: the dataset's metadata (class names and colours).
            instance_mode, task, confidence_threshold: see :class:`PredictionDrawer`.
            batch_size: images per predictor call in :func:`run_on_images`.
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        super().__init__(
            metadata, instance_mode=instance_mode, task=task,
            confidence_threshold=confidence_threshold,
        )
        self.predictor = predictor
        self.batch_size = batch_size

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


@dataclass
class RunSummary:
    """Outcome of a batch run: files written and ``(input, reason)`` of failures."""

    written: List[Path] = field(default_factory=list)
    failed: List[Tuple[Path, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{len(self.written)} written, {len(self.failed)} failed"


def run_on_images(
    renderer: ImageRenderer,
    inputs: Sequence[Path],
    outputs: Optional[Sequence[Path]],
    *,
    show: Optional[Callable[[Path, np.ndarray], bool]] = None,
    progress: Optional[bool] = None,
) -> RunSummary:
    """Predict, draw and save (or show) each image; a failing image is logged and skipped.

    With ``renderer.batch_size`` > 1 the images are read and predicted ``batch_size`` at a time
    (one model call on the list); when that call fails, every image of the batch is failed.

    Args:
        renderer: the predictor and drawer to run (an :class:`ImageRenderer` or alike).
        inputs: image files.
        outputs: output file per input (see :func:`image_output_paths`), or ``None`` to only
            call ``show``.
        show: ``(path, bgr drawing) -> keep going`` when not saving.
        progress: tqdm bar (``None``: only for more than one image).

    Returns:
        The :class:`RunSummary` (also logged).
    """
    summary = RunSummary()
    batch_size = getattr(renderer, "batch_size", 1)  # renderer-like objects may lack it
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
                all_predictions = renderer.predictor([image for _, _, image in batch])
            else:
                all_predictions = [renderer.predictor(batch[0][2])]
        except Exception as e:
            logger.exception("Inference failed on %s", ", ".join(str(p) for _, p, _ in batch))
            summary.failed += [(p, f"{type(e).__name__}: {e}") for _, p, _ in batch]
            bar.update(len(batch))
            batch = []
            continue
        seconds = (time.perf_counter() - start) / len(batch)
        for (i, path, image), predictions in zip(batch, all_predictions):
            bar.update(1)
            if not _draw_and_save(renderer, path, image, predictions, seconds, summary, show,
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
    renderer: ImageRenderer,
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
        key, payload = renderer.prepare(predictions)
        drawing = renderer.draw(image[:, :, ::-1], key, payload).get_image()[:, :, ::-1]
    except Exception as e:
        logger.exception("Drawing failed on %s", path)
        summary.failed.append((path, f"{type(e).__name__}: {e}"))
        return True
    logger.info(
        "%s: %s drawn in %.2fs", path, renderer.describe(key, payload),
        seconds + time.perf_counter() - start,
    )
    hint_of = getattr(renderer, "nothing_drawn_hint", None)  # renderer-likes may lack it
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
        task: one of :data:`knet_d2.utils.visualization.TASKS`.
        predictor: use this callable instead of building ``knet_d2.Predictor``.
        strict: raise if any image fails (otherwise failures are only logged).

    Returns:
        The written files, in input order.

    Raises:
        RuntimeError: with ``strict``, when an image could not be read, predicted or written.
    """
    check_task(task)
    cfg = cfg.clone()
    cfg.defrost()
    if model_weights is not None:
        cfg.MODEL.WEIGHTS = str(model_weights)
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    if not image_paths:
        raise ValueError("render_predictions got no image paths")
    inputs = expand_inputs(image_paths)
    out_dir = Path(output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = image_output_paths(inputs, out_dir)
    renderer = ImageRenderer(
        Predictor(cfg) if predictor is None else predictor, dataset_metadata(cfg),
        task=task, confidence_threshold=confidence_threshold,
    )
    summary = run_on_images(renderer, inputs, outputs, progress=False)
    if strict and summary.failed:
        details = "; ".join(f"{p}: {r}" for p, r in summary.failed)
        raise RuntimeError(f"render_predictions failed on {details}")
    return summary.written
