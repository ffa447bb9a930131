"""D2 evaluators of the synthetic benchmark, with per-class panoptic quality.

D2's :class:`~detectron2.evaluation.COCOPanopticEvaluator` computes the per-class PQ (panopticapi's
``pq_compute``) but returns only the All / Things / Stuff averages.
:class:`PerClassPanopticEvaluator` adds ``PQ-<class>``, ``SQ-<class>`` and ``RQ-<class>`` to its
``panoptic_seg`` results; everything else (and every averaged number) is D2's own.

:func:`build_synthetic_evaluator` gives the model runs and the baselines of
``benchmarks/synthetic_baselines.py`` the same evaluators, so their numbers are comparable.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

__all__ = ["PerClassPanopticEvaluator", "build_synthetic_evaluator", "mask_predictions",
           "mask_iou", "TASK_EVALUATIONS"]

#: Benchmark task -> the evaluations its synthetic config runs (its MODEL.KNET.TEST flags).
TASK_EVALUATIONS: Dict[str, tuple] = {
    "panoptic": ("panoptic", "instance", "semantic"),
    "instance": ("instance",),
    "semantic": ("semantic",),
}


def _dataset_id_to_name(dataset_name: str) -> Dict[int, str]:
    meta = MetadataCatalog.get(dataset_name)
    names = {}
    for dataset_id, contiguous in meta.stuff_dataset_id_to_contiguous_id.items():
        names[int(dataset_id)] = meta.stuff_classes[contiguous]
    for dataset_id, contiguous in meta.thing_dataset_id_to_contiguous_id.items():
        names[int(dataset_id)] = meta.thing_classes[contiguous]
    return names


class PerClassPanopticEvaluator(COCOPanopticEvaluator):
    """COCOPanopticEvaluator whose results also hold ``PQ-/SQ-/RQ-<class name>`` (0-100) for
    every class with ground truth or predictions in the split."""

    def evaluate(self):
        import panopticapi.evaluation as pq_module

        original = pq_module.pq_compute
        captured = {}

        def capture(*args, **kwargs):
            captured["result"] = original(*args, **kwargs)
            return captured["result"]

        pq_module.pq_compute = capture  # D2 imports it from the module inside evaluate()
        try:
            results = super().evaluate()
        finally:
            pq_module.pq_compute = original
        if results is None or "result" not in captured:
            return results
        names = _dataset_id_to_name(self._metadata.name)
        res = results["panoptic_seg"]
        for dataset_id, q in sorted(captured["result"]["per_class"].items()):
            name = names.get(int(dataset_id), str(dataset_id))
            for key in ("pq", "sq", "rq"):
                res[f"{key.upper()}-{name}"] = 100.0 * q[key]
        return results


def build_synthetic_evaluator(
    dataset_name: str, evaluations: Sequence[str], output_dir: str
) -> DatasetEvaluator:
    """The evaluators of ``evaluations`` (subset of panoptic / instance / semantic) on a
    synthetic split: PerClassPanopticEvaluator, COCOEvaluator (bbox + segm; the instance
    annotations of the split), SemSegEvaluator."""
    unknown = set(evaluations) - {"panoptic", "instance", "semantic"}
    if unknown or not evaluations:
        raise ValueError(f"evaluations must be panoptic / instance / semantic, got {evaluations}")
    evaluators = []
    if "semantic" in evaluations:
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir))
    if "panoptic" in evaluations:
        evaluators.append(PerClassPanopticEvaluator(dataset_name, output_dir))
    if "instance" in evaluations:
        evaluators.append(
            COCOEvaluator(dataset_name, tasks=("bbox", "segm"), output_dir=output_dir)
        )
    return DatasetEvaluators(evaluators)


def mask_predictions(image_size: Tuple[int, int], masks: torch.Tensor, classes: torch.Tensor,
                     scores: torch.Tensor):
    """Predictions as D2's COCOEvaluator reads a model's ``"instances"``: ``Instances`` of
    ``image_size`` with ``pred_masks`` (N, H, W) bool, ``pred_classes`` (N,) contiguous ids,
    ``scores`` (N,) and the masks' tight ``pred_boxes``."""
    from detectron2.structures import BitMasks, Instances

    out = Instances(tuple(image_size))
    out.pred_masks = masks
    out.pred_classes = classes
    out.scores = scores
    out.pred_boxes = BitMasks(masks).get_bounding_boxes()
    return out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool and (N, H, W) bool -> (N,) IoU of each pair ``a[k]``, ``b[k]`` (0 where
    both are empty): the score of a prediction ranked by its mask quality."""
    a, b = a.flatten(1), b.flatten(1)
    return (a & b).sum(1) / (a | b).sum(1).clamp(min=1)
