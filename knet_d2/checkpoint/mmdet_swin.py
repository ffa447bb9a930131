"""The Swin names of mmdet / mmseg (official K-Net releases) -> official Swin names.

mmdet and mmseg use the same names: ``patch_embed.projection`` -> ``patch_embed.proj``,
``stages.{i}`` -> ``layers.{i}``, ``attn.w_msa.{qkv, proj, relative_position_bias_table,
relative_position_index}`` -> ``attn.*``, ``ffn.layers.0.0`` -> ``mlp.fc1``, ``ffn.layers.1`` ->
``mlp.fc2``; ``norm1``, ``norm2``, ``patch_embed.norm``, ``norm{i}`` and ``downsample.{reduction,
norm}`` keep their names, but the 4C input channels of ``downsample.reduction.weight`` (dim 1)
and ``downsample.norm.*`` are reordered from ``nn.Unfold`` order to the official concat order
(:func:`unfold_to_concat_order`). ``relative_position_index`` is copied after checking that it
equals the official formula (mmdet computes it differently, with the same values).
"""
import re
from typing import Optional

import torch

from .knet_official import ConversionResult, rename_by_rules

__all__ = ["convert_mmdet_swin_item", "rename_mmdet_swin_key", "unfold_to_concat_order"]

_SWIN_RULES = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^patch_embed\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
        (r"^patch_embed\.norm\.(weight|bias)$", r"patch_embed.norm.\1"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$",
         r"layers.\1.blocks.\2.\3.\4"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(qkv|proj)\.(weight|bias)$",
         r"layers.\1.blocks.\2.attn.\3.\4"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\."
         r"(relative_position_bias_table|relative_position_index)$",
         r"layers.\1.blocks.\2.attn.\3"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$",
         r"layers.\1.blocks.\2.mlp.fc1.\3"),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.(weight|bias)$",
         r"layers.\1.blocks.\2.mlp.fc2.\3"),
        (r"^stages\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$",
         r"layers.\1.downsample.\2"),
        (r"^norm(\d+)\.(weight|bias)$", r"norm\1.\2"),
    )
)


def rename_mmdet_swin_key(key: str) -> Optional[str]:
    """mmdet/mmseg Swin key (without ``backbone.``) -> official Swin name, or None.

    Only the name: the patch-merging weights also need :func:`unfold_to_concat_order`.

    >>> rename_mmdet_swin_key("stages.2.blocks.5.ffn.layers.0.0.weight")
    'layers.2.blocks.5.mlp.fc1.weight'
    """
    return rename_by_rules(_SWIN_RULES, key)


# Official concat group g = dy + 2 * dx  ->  position of (dy, dx) in a 2x2 unfold patch.
_GROUP_TO_UNFOLD = torch.tensor([0, 2, 1, 3])


def unfold_to_concat_order(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Reorder a 4C patch-merging axis from mmdet/mmseg to official Swin order.

    mmdet's ``PatchMerging`` gathers each 2x2 patch with ``nn.Unfold(2, stride=2)``, which
    orders the 4C values channel-major, then kernel row, then kernel column:
    ``u = 4 * c + 2 * dy + dx``. The official model concatenates the four sub-grids
    ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``, i.e. group-major with
    group ``g = dy + 2 * dx``: ``o = g * C + c``. Returns ``t`` with ``out[..., o, ...] =
    t[..., u(o), ...]`` along ``dim`` (the inverse of mmdet's ``swin_converter`` reordering).

    Args:
        t: e.g. ``reduction.weight`` (2C, 4C) with ``dim=1`` or ``norm.weight`` (4C,), ``dim=0``.
        dim: the 4C axis.
    """
    n = t.shape[dim]
    if n % 4:
        raise ValueError(f"patch-merging axis has {n} entries, not a multiple of 4")
    c = n // 4
    index = (torch.arange(c)[None, :] * 4 + _GROUP_TO_UNFOLD[:, None]).reshape(-1)
    return t.index_select(dim, index.to(t.device))


def _official_relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w): (y1 - y2 + w - 1) * (2w - 1) + (x1 - x2 + w - 1), tokens row-major."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :] + window - 1) * (2 * window - 1) + (
        xs[:, None] - xs[None, :] + window - 1
    )


def convert_mmdet_swin_item(
    res: ConversionResult, key: str, rest: str, value: torch.Tensor, prefix: str
) -> None:
    """Put the official name ``prefix + <renamed rest>`` of the backbone weight ``key`` (``rest``
    = ``key`` without ``backbone.``) into ``res``, or mark ``key`` unconverted with the reason."""
    new = rename_mmdet_swin_key(rest)
    if new is None:
        res.unconverted[key] = "no conversion rule for this Swin key"
        return
    if new.endswith("downsample.reduction.weight"):
        value = unfold_to_concat_order(value, 1)
    elif new.endswith(("downsample.norm.weight", "downsample.norm.bias")):
        value = unfold_to_concat_order(value, 0)
    elif new.endswith("relative_position_index"):
        window = int(round(value.shape[0] ** 0.5))
        expected = _official_relative_position_index(window)
        if value.shape != expected.shape or not torch.equal(value.long().cpu(), expected):
            res.unconverted[key] = "relative_position_index differs from the official formula"
            return
    res.put(key, prefix + new, value)
