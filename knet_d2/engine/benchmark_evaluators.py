"""D2's evaluators for the Cityscapes and ADE20K-panoptic dataset names.

One panoptic K-Net returns ``panoptic_seg``, ``instances`` and ``sem_seg`` together, so one
``--eval-only`` run gives every standard metric of the benchmark (as in Mask2Former):

==========================  =====================================================
``evaluator_type``          evaluators (by ``MODEL.KNET.TEST.*_ON`` flag)
==========================  =====================================================
cityscapes_panoptic_seg     PQ: COCOPanopticEvaluator; AP: CityscapesInstanceEvaluator;
                            mIoU: CityscapesSemSegEvaluator
cityscapes_instance         CityscapesInstanceEvaluator
cityscapes_sem_seg          CityscapesSemSegEvaluator
ade20k_panoptic_seg         PQ: COCOPanopticEvaluator; mIoU: SemSegEvaluator
==========================  =====================================================

D2's Cityscapes evaluators run the official ``cityscapesscripts`` package; it is checked when
the evaluators are built, so a missing package fails before inference, not after it.
"""
from __future__ import annotations

import importlib.util
from typing import Dict, List

from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    SemSegEvaluator,
)

__all__ = ["BENCHMARK_EVALUATOR_TYPES", "benchmark_evaluators", "require_cityscapesscripts"]

#: ``evaluator_type`` values handled by :func:`benchmark_evaluators`.
BENCHMARK_EVALUATOR_TYPES = (
    "cityscapes_panoptic_seg",
    "cityscapes_instance",
    "cityscapes_sem_seg",
    "ade20k_panoptic_seg",
)


def require_cityscapesscripts(purpose: str) -> None:
    """Raise ``ModuleNotFoundError`` saying how to install ``cityscapesscripts`` if it is absent.

    Args:
        purpose: what needs it, e.g. "CityscapesInstanceEvaluator (AP)".
    """
    if importlib.util.find_spec("cityscapesscripts") is None:
        raise ModuleNotFoundError(
            f"{purpose} needs the 'cityscapesscripts' package (the official Cityscapes "
            "evaluation code), which is not installed: run tools/install_deps.sh, or "
            "`pip install --no-deps cityscapesscripts appdirs pyquaternion coloredlogs "
            "humanfriendly`. To skip this metric, set the matching MODEL.KNET.TEST.*_ON False."
        )


def benchmark_evaluators(
    dataset_name: str, evaluator_type: str, flags: Dict[str, bool], output_folder: str
) -> List[DatasetEvaluator]:
    """The evaluators of one dataset whose ``evaluator_type`` is in
    :data:`BENCHMARK_EVALUATOR_TYPES` (an empty list for any other type).

    Args:
        dataset_name: a registered dataset name.
        evaluator_type: its metadata's ``evaluator_type``.
        flags: ``{"panoptic": bool, "instance": bool, "semantic": bool}``, the outputs the
            model produces.
        output_folder: where COCOPanopticEvaluator / SemSegEvaluator write their files.
    """
    out: List[DatasetEvaluator] = []
    if evaluator_type in ("cityscapes_panoptic_seg", "ade20k_panoptic_seg") and flags["panoptic"]:
        out.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if evaluator_type == "cityscapes_instance" or (
        evaluator_type == "cityscapes_panoptic_seg" and flags["instance"]
    ):
        require_cityscapesscripts(f"CityscapesInstanceEvaluator (AP on '{dataset_name}')")
        out.append(CityscapesInstanceEvaluator(dataset_name))
    if evaluator_type == "cityscapes_sem_seg" or (
        evaluator_type == "cityscapes_panoptic_seg" and flags["semantic"]
    ):
        require_cityscapesscripts(f"CityscapesSemSegEvaluator (mIoU on '{dataset_name}')")
        out.append(CityscapesSemSegEvaluator(dataset_name))
    if evaluator_type == "ade20k_panoptic_seg" and flags["semantic"]:
        out.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    return out
