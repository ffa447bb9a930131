"""paint_targets: per-pixel targets painted in priority order, later priority wins."""
import torch

from knet_d2.modeling.target_painting import paint_targets


def test_paint_targets_later_priority_wins():
    covers = torch.tensor(
        [[[1, 1, 0]], [[0, 1, 1]], [[1, 0, 0]]], dtype=torch.bool
    )  # 3 writers on a 1x3 image (two images)
    out = paint_targets(
        batch_idx=torch.tensor([0, 0, 1]),
        priority=torch.tensor([5, 2, 0]),
        covers=covers,
        values=torch.tensor([10, 20, 30]),
        batch_size=2,
        num_priorities=6,
        fill=-7,
    )
    # image 0: writer 1 (prio 2) then writer 0 (prio 5) overwrites the shared pixel
    assert out.tolist() == [[[10, 10, 20]], [[30, -7, -7]]]
