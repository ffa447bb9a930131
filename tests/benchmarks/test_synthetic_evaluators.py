"""benchmarks/synthetic_evaluators.py: the predictions the COCOEvaluator reads, and the paired
mask IoU that scores them by mask quality."""
from __future__ import annotations

import pytest
import torch

from benchmarks.synthetic_evaluators import mask_iou, mask_predictions


def test_mask_iou_pairs_masks_and_is_zero_for_two_empty_ones():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2] = True          # 8 pixels
    b[0, :1] = True          # 4 of them
    a[1, :, :2] = True
    b[1, :, 2:] = True       # disjoint
    assert mask_iou(a, b).tolist() == pytest.approx([0.5, 0.0, 0.0])


def test_mask_predictions_carry_tight_boxes():
    masks = torch.zeros(1, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    pred = mask_predictions((6, 8), masks, torch.tensor([2]), torch.tensor([0.7]))
    assert pred.image_size == (6, 8) and pred.pred_classes.tolist() == [2]
    assert pred.pred_boxes.tensor.tolist() == [[2.0, 1.0, 5.0, 3.0]]
    assert pred.scores.tolist() == pytest.approx([0.7])
