"""Per-pixel label maps from overlapping writers, later writers winning (batched, no loops).

K-Net paints its stage-0 semantic target (stuff masks first, then the matched thing masks in
ascending kernel order) and its rank targets this way (docs/reference.md §2.3), each writer
overwriting what is under it.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["paint_targets"]


def paint_targets(
    batch_idx: Tensor,
    priority: Tensor,
    covers: Tensor,
    values: Tensor,
    batch_size: int,
    num_priorities: int,
    fill: int,
) -> Tensor:
    """Paint per-pixel labels where later writers overwrite earlier ones, for a whole batch.

    Writer ``w`` belongs to image ``batch_idx[w]``, writes ``values[w]`` on the pixels where
    ``covers[w]`` is true and is applied after every writer of the same image with a lower
    ``priority``; the result is the value of the highest-priority covering writer.

    Args:
        batch_idx: (P,) long image index of each writer.
        priority: (P,) long in [0, num_priorities), unique within an image.
        covers: (P, H, W) bool.
        values: (P,) long values to write.
        batch_size: B.
        num_priorities: an upper bound of the priorities (known on the host, so no sync).
        fill: value of pixels covered by no writer.

    Returns:
        (B, H, W) long map.
    """
    h, w = covers.shape[-2:]
    device = covers.device
    out = torch.full((batch_size, h * w), fill, dtype=torch.long, device=device)
    if covers.shape[0] == 0:
        return out.view(batch_size, h, w)
    keyed = torch.where(covers.reshape(-1, h * w), priority[:, None], -1)
    top = torch.full((batch_size, h * w), -1, dtype=torch.long, device=device)
    top.scatter_reduce_(0, batch_idx[:, None].expand_as(keyed), keyed, reduce="amax")
    # table[b, priority] = value
    table = torch.full((batch_size, num_priorities), fill, dtype=torch.long, device=device)
    table[batch_idx, priority] = values
    painted = torch.gather(table, 1, top.clamp(min=0))
    out = torch.where(top >= 0, painted, out)
    return out.view(batch_size, h, w)
