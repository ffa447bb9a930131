"""Building blocks of the Swin Transformer backbone (:mod:`.swin`): windows, masks, layers.

Plain PyTorch, official Swin names (docs/architecture.md §4). Shapes, with B images, a map of
H x W tokens of C channels, window size ws, N = ws**2 tokens per window and nW windows per
image (after padding H, W to multiples of ws)::

    window_partition        (B, H, W, C)          -> (B * nW, N, C)
    window_reverse          (B * nW, N, C)        -> (B, H, W, C)
    relative_position_index ws                    -> (N, N) int64 index into the bias table
    shifted_window_mask     (H, W, ws, shift)     -> (nW, N, N) additive mask (0 / MASK_VALUE)
    DropPath                (B, ...)              -> (B, ...)
    Mlp                     (..., C)              -> (..., C)
    WindowAttention         (B * nW, N, C)        -> (B * nW, N, C)
    SwinBlock               (B, H*W, C), (H, W)   -> (B, H*W, C)
    PatchMerging            (B, H*W, C), (H, W)   -> (B, ceil(H/2)*ceil(W/2), 2C), (H', W')
    PatchEmbed              (B, 3, H, W)          -> (B, C, ceil(H/p), ceil(W/p))
    SwinStage               (B, H*W, C), (H, W)   -> stage output (B, H*W, C), (H, W), next-stage
                                                     input (B, H'*W', 2C), (H', W')

Parameter / buffer names inside a stage (the official ones, which checkpoints rely on):
``blocks.{j}.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
attn.relative_position_index, norm2, mlp.fc1, mlp.fc2}.*`` and ``downsample.{reduction, norm}.*``;
``PatchEmbed``: ``proj.*``, ``norm.*``.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "MASK_VALUE",
    "DropPath",
    "Mlp",
    "WindowAttention",
    "SwinBlock",
    "PatchMerging",
    "PatchEmbed",
    "SwinStage",
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shifted_window_mask",
]

# Logit added to attention pairs of tokens from different regions of a shifted window.
MASK_VALUE = -100.0


# ----------------------------------------------------------------------------- helpers
def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cut a map into non-overlapping square windows.

    Args:
        x: (B, H, W, C) with H and W multiples of ``window_size``.

    Returns:
        (B * nW, window_size**2, C), windows in row-major order per image, tokens in row-major
        order inside a window; nW = (H / window_size) * (W / window_size).
    """
    b, h, w, c = x.shape
    ws = window_size
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws**2, C) -> (B, h, w, C)."""
    ws = window_size
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the relative-position bias table for every (query, key) pair of a window.

    For tokens p=(y1, x1) and q=(y2, x2) the index is
    ``(y1 - y2 + ws - 1) * (2 * ws - 1) + (x1 - x2 + ws - 1)``.

    Returns:
        (ws**2, ws**2) int64, values in [0, (2 * ws - 1)**2).
    """
    ws = window_size
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=-1)  # (N, 2)
    rel = coords[:, None, :] - coords[None, :, :] + (ws - 1)  # (N, N, 2), in [0, 2ws-2]
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shifted_window_mask(
    h: int, w: int, window_size: int, shift_size: int, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Attention mask of shifted-window attention on an (h, w) map (multiples of window_size).

    After the cyclic shift by ``shift_size``, the map splits into 3 x 3 regions (boundaries at
    ``h - window_size`` and ``h - shift_size`` along rows, the same along columns). Tokens may
    only attend to tokens of the same region.

    Returns:
        (nW, ws**2, ws**2) float: 0 for allowed pairs, ``MASK_VALUE`` (-100) otherwise; windows
        in the order of :func:`window_partition`.
    """

    def region(n: int) -> torch.Tensor:
        idx = torch.arange(n, device=device)
        return (idx >= n - window_size).long() + (idx >= n - shift_size).long()  # 0, 1, 2

    ids = region(h)[:, None] * 3 + region(w)[None, :]  # (h, w)
    win = window_partition(ids[None, :, :, None], window_size).squeeze(-1)  # (nW, N)
    mask = win[:, :, None] != win[:, None, :]
    return torch.zeros(mask.shape, device=device).masked_fill_(mask, MASK_VALUE)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the whole residual branch of a sample with
    probability ``drop_prob`` and scale the kept ones by 1 / (1 - drop_prob). Identity in eval.
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ...) -> same shape."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout; (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# ----------------------------------------------------------------------------- modules
class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    ``qkv`` projects C -> 3C laid out as [q | k | v], each split into ``num_heads`` contiguous
    heads of C / num_heads channels. Logits = (q * scale) k^T + B[relative_position_index]
    (+ mask), scale = ``qk_scale`` or head_dim ** -0.5.
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin: channels {dim} not divisible by num_heads {num_heads}")
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """(num_heads, N, N) bias, N = window_size**2."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B * nW, N, C) window tokens, image-major (all windows of image 0 first).
            mask: (nW, N, N) additive mask shared by all images, or None.

        Returns:
            (B * nW, N, C).
        """
        bw, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B*nW, h, N, N)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, h, n, n) + mask[None, :, None]
            attn = attn.view(bw, h, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class SwinBlock(nn.Module):
    """Swin Transformer block: x + DropPath(W-MSA(LN(x))), then x + DropPath(MLP(LN(x))).

    W-MSA runs on windows of the map zero-padded (after ``norm1``) to window multiples;
    ``shift_size > 0`` cyclically shifts the map by -shift_size before partitioning and back
    afterwards (SW-MSA), using the mask of :func:`shifted_window_mask`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"Swin: shift_size {shift_size} must be in [0, {window_size})")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(
        self, x: torch.Tensor, hw: Tuple[int, int], attn_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Args:
            x: (B, H*W, C) tokens in row-major order.
            hw: (H, W).
            attn_mask: (nW, N, N) mask of the padded map (:func:`shifted_window_mask`), used
                only when shift_size > 0; computed here when None.

        Returns:
            (B, H*W, C).
        """
        (h, w), ws, s = hw, self.window_size, self.shift_size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (-h) % ws, (-w) % ws
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
            if attn_mask is None:
                attn_mask = shifted_window_mask(hp, wp, ws, s, x.device)
        y = self.attn(window_partition(y, ws), attn_mask if s > 0 else None)
        y = window_reverse(y, ws, hp, wp)
        if s > 0:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(b, h * w, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 patch merging: (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C).

    The map (B, H, W, C) is zero-padded to even H, W; the four sub-grids are concatenated along
    channels in the official Swin order (rows first, then columns)::

        x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]

    i.e. (row offset, col offset) = (0,0), (1,0), (0,1), (1,1) -> (B, H/2, W/2, 4C); then
    ``norm`` (LayerNorm 4C) and ``reduction`` (Linear 4C -> 2C, no bias). mmdet/mmseg Swin
    checkpoints use the unfold order (0,0), (0,1), (1,0), (1,1) instead, so their
    ``reduction.weight`` columns and ``norm`` entries must be permuted on conversion.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """x: (B, H*W, C), hw = (H, W) -> ((B, H'*W', 2C), (H', W')), H' = ceil(H / 2)."""
        h, w = hw
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        h2, w2 = x.shape[1:3]
        return self.reduction(self.norm(x.view(b, h2 * w2, 4 * c))), (h2, w2)


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: pad (right/bottom) to patch multiples, conv k=s=patch,
    optional LayerNorm. (B, in_chans, H, W) -> (B, embed_dim, ceil(H/p), ceil(W/p))."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 patch_norm: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
        x = self.proj(x)
        if self.norm is not None:
            b, c, h, w = x.shape
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)
        return x


class SwinStage(nn.Module):
    """One Swin stage (official name ``BasicLayer``): ``blocks`` alternating W-MSA / SW-MSA,
    then an optional ``downsample`` (:class:`PatchMerging`)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        downsample: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size, self.shift_size = window_size, window_size // 2
        self.use_checkpoint = use_checkpoint
        dpr = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim, num_heads, window_size, 0 if j % 2 == 0 else self.shift_size, mlp_ratio,
                qkv_bias, qk_scale, drop, attn_drop, dpr[j],
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(
        self, x: torch.Tensor, hw: Tuple[int, int]
    ) -> Tuple[torch.Tensor, Tuple[int, int], torch.Tensor, Tuple[int, int]]:
        """
        Args:
            x: (B, H*W, C), hw = (H, W).

        Returns:
            (stage output (B, H*W, C), (H, W), next-stage input, its (H', W')); without
            downsample the next-stage input is the stage output itself.
        """
        ws = self.window_size
        mask = None
        if len(self.blocks) > 1 and self.shift_size > 0:
            hp, wp = math.ceil(hw[0] / ws) * ws, math.ceil(hw[1] / ws) * ws
            mask = shifted_window_mask(hp, wp, ws, self.shift_size, x.device)
        for blk in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, hw, mask, use_reentrant=False)
            else:
                x = blk(x, hw, mask)
        if self.downsample is None:
            return x, hw, x, hw
        x_down, hw_down = self.downsample(x, hw)
        return x, hw, x_down, hw_down
