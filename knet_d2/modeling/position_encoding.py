"""Sine positional encoding as used by K-Net's localization FPN (DETR / mmdet style).

For a map of size (H, W) with all pixels valid (K-Net always uses an all-valid mask over the
padded feature map) and ``num_feats = D``:

* ``y_r = (r + 1 + offset) / (H + eps) * scale`` for row ``r`` (0-based) and
  ``x_c = (c + 1 + offset) / (W + eps) * scale`` for column ``c`` (cumulative count of valid
  pixels, normalised by the last one);
* ``t_k = temperature ** (2 * (k // 2) / D)`` for ``k = 0..D-1``;
* channel ``k`` of the y part is ``sin(y / t_k)`` for even ``k`` and ``cos(y / t_k)`` for odd
  ``k`` (sin/cos interleaved); the x part likewise;
* output = ``cat([y part, x part], channel)`` -> ``2 * D`` channels.

Defaults (temperature 10000, normalize, scale 2*pi, eps 1e-6, offset 0) are mmdet's
``SinePositionalEncoding`` defaults used by K-Net (docs/reference.md §1.2). No parameters.
"""
import math
from typing import Optional

import torch
from torch import nn

__all__ = ["SinePositionalEncoding"]


class SinePositionalEncoding(nn.Module):
    """Fixed 2-D sine positional encoding, ``2 * num_feats`` output channels."""

    def __init__(
        self,
        num_feats: int,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
        offset: float = 0.0,
    ):
        """
        Args:
            num_feats: channels of each of the y and x parts (output has ``2 * num_feats``).
            temperature: base of the frequency progression.
            normalize: divide the cumulative coordinates by the last one and multiply by
                ``scale`` (True in K-Net).
            scale: coordinate range when ``normalize``.
            eps: added to the normaliser.
            offset: added to the cumulative coordinates before normalising.
        """
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W) feature map; only its batch size, spatial size, device and dtype
                are used.
            mask: optional (B, H, W) bool, True = padded (ignored) pixel. None = all valid,
                which is what K-Net uses.

        Returns:
            (B, 2 * num_feats, H, W) encoding in ``x.dtype``.
        """
        b, _, h, w = x.shape
        if mask is None:
            valid = torch.ones((b, h, w), dtype=torch.float32, device=x.device)
        else:
            valid = (~mask.bool()).to(torch.float32)
        y_embed = valid.cumsum(dim=1)
        x_embed = valid.cumsum(dim=2)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        k = torch.arange(self.num_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_feats)
        is_even = (k.long() % 2 == 0).view(1, 1, 1, -1)

        def _encode(embed: torch.Tensor) -> torch.Tensor:
            # (B, H, W) -> (B, H, W, D) with sin on even, cos on odd channels
            arg = embed[..., None] / dim_t
            return torch.where(is_even, arg.sin(), arg.cos())

        pos = torch.cat([_encode(y_embed), _encode(x_embed)], dim=3)
        return pos.permute(0, 3, 1, 2).contiguous().to(x.dtype)
