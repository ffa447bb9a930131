"""Drawing K-Net outputs with detectron2's visualizers: metadata view, output filters, drawer.

Conventions followed (see docs/architecture.md §9 and §13):

* a model output dict holds any of ``panoptic_seg`` ``(ids (H, W), segments_info)``,
  ``instances`` (``pred_masks``, ``scores``, ``pred_classes``, ``pred_boxes``) and ``sem_seg``
  ``(C, H, W)``; class ids are the dataset's contiguous ids (for panoptic metadata they index
  ``stuff_classes``, which lists every class; thing ids are the values of
  ``thing_dataset_id_to_contiguous_id``);
* the confidence threshold only changes what is drawn, never the model;
* D2's ``Visualizer`` looks thing names up as ``thing_classes[category_id]``, which breaks when
  thing ids do not come first: :func:`drawing_metadata` builds a view where that lookup is valid.

Everything here is importable without a display. :mod:`knet_d2.rendering` runs a predictor and
this drawer over image files; ``demo/predictor.py`` adds video and worker processes.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

__all__ = [
    "TASKS",
    "PredictionDrawer",
    "check_task",
    "drawing_metadata",
    "filter_instances",
    "filter_panoptic",
    "select_task",
]

#: Drawing targets: ``auto`` picks panoptic, then instances, then semantic.
TASKS = ("auto", "panoptic", "instance", "semantic")

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
            f"metadata of '{metadata.name}' has {len(things)} thing_classes "
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
            out.pred_boxes = BitMasks(masks).get_bounding_boxes()
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


def check_task(task: str) -> str:
    """``task`` itself when it is one of :data:`TASKS`.

    Raises:
        ValueError: unknown task (the message lists the valid ones).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    return task


def select_task(predictions: Predictions, task: str = "auto") -> str:
    """Which output of ``predictions`` to draw: ``panoptic_seg``, ``instances`` or ``sem_seg``.

    Args:
        predictions: one model output dict.
        task: one of :data:`TASKS`; ``auto`` prefers panoptic, then instances, then semantic.

    Raises:
        ValueError: unknown task, or the model did not produce the requested output.
    """
    keys = {"panoptic": "panoptic_seg", "instance": "instances", "semantic": "sem_seg"}
    if check_task(task) == "auto":
        for key in ("panoptic_seg", "instances", "sem_seg"):
            if key in predictions:
                return key
        raise ValueError(
            "the model output has none of 'panoptic_seg', 'instances', "
            f"'sem_seg' (keys: {sorted(predictions)})"
        )
    if keys[task] not in predictions:
        raise ValueError(
            f"--task {task} needs '{keys[task]}' in the model output, which has "
            f"{sorted(predictions)}; enable it in the config (MODEL.KNET.TEST.*_ON) or use "
            "--task auto"
        )
    return keys[task]


def _threshold_below(score: float) -> float:
    """A two-decimal threshold at or below ``score`` (0.2137 -> 0.21)."""
    return max(0.0, int(score * 100) / 100)



class PredictionDrawer:
    """Draws one model output on its image: task choice, confidence threshold, D2 ``Visualizer``.

    ``prepare`` picks what to draw and filters it, ``draw`` renders the prepared output,
    ``describe`` and ``nothing_drawn_hint`` give the texts logged for each image.
    """

    def __init__(
        self,
        metadata: Metadata,
        *,
        instance_mode: ColorMode = ColorMode.IMAGE,
        task: str = "auto",
        confidence_threshold: float = 0.5,
    ) -> None:
        """
        Args:
            metadata: the dataset's metadata (class names and colours).
            instance_mode: D2 colour mode for drawing.
            task: one of :data:`TASKS`.
            confidence_threshold: instances / thing segments scoring below it are not drawn.
        """
        self.task = check_task(task)
        self.metadata = metadata
        self.draw_metadata = drawing_metadata(metadata)
        self.instance_mode = instance_mode
        self.confidence_threshold = float(confidence_threshold)

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

    def draw(self, image_rgb: np.ndarray, key: str, payload: Any) -> VisImage:
        """Draw a prepared output (see :meth:`prepare`) on an RGB image."""
        vis = Visualizer(image_rgb, self.draw_metadata, instance_mode=self.instance_mode)
        if key == "panoptic_seg":
            return vis.draw_panoptic_seg(*payload)
        if key == "instances":
            return vis.draw_instance_predictions(payload)
        return vis.draw_sem_seg(payload)

