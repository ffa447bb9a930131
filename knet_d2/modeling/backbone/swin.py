"""Swin Transformer backbone (Liu et al., ICCV 2021, arXiv 2103.14030) for Detectron2.

Hierarchical vision transformer with (shifted) window attention, written for knet_d2 in plain
PyTorch. It follows the *detection* variant of the official model (any input size: the image is
padded to the patch size, every block pads its map to a multiple of the window size; one output
LayerNorm per returned stage). Shapes for an input (B, 3, H, W) with patch size 4::

    patch_embed      (B, 3, H, W) -> (B, C, H/4, W/4)                     (ceil divisions)
    layers.0  (stage 0, C ch)      -> norm0 -> res2 (B, C,  H/4,  W/4)   stride 4
    layers.1  (stage 1, 2C ch)     -> norm1 -> res3 (B, 2C, H/8,  W/8)   stride 8
    layers.2  (stage 2, 4C ch)     -> norm2 -> res4 (B, 4C, H/16, W/16)  stride 16
    layers.3  (stage 3, 8C ch)     -> norm3 -> res5 (B, 8C, H/32, W/32)  stride 32

Stage i runs ``depths[i]`` blocks (even blocks: regular windows, odd blocks: windows shifted by
``window_size // 2`` with the standard attention mask), then, for i < 3, a ``PatchMerging``
that halves the resolution and doubles the channels for the next stage. The output of stage i
is taken *before* its patch merging.

Parameter names are those of the official Swin repositories (so official ImageNet checkpoints
load once ``knet_d2.checkpoint.swin``, run by ``tools/convert-pretrained-swin-model-to-d2.py``,
has dropped the classifier):
``patch_embed.proj.*``, ``patch_embed.norm.*``, ``absolute_pos_embed`` (APE only),
``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
attn.relative_position_index, norm2, mlp.fc1, mlp.fc2}.*``,
``layers.{i}.downsample.{reduction, norm}.*`` (i < 3) and ``norm{i}.*`` for each output stage.
``MODEL.BACKBONE.FREEZE_AT`` is not used: every stage trains (official ``frozen_stages=-1``).
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "DropPath",
    "WindowAttention",
    "SwinBlock",
    "PatchMerging",
    "PatchEmbed",
    "SwinStage",
    "SwinTransformer",
    "build_swin_backbone",
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


# ----------------------------------------------------------------------------- backbone
class SwinTransformer(Backbone):
    """Swin Transformer as a D2 backbone: ``forward(x (B, 3, H, W))`` returns
    ``{"res{i+2}": (B, embed_dim * 2**i, ceil(H / (p * 2**i)), ceil(W / (p * 2**i)))}`` for the
    requested stages i (p = patch size), each after its output LayerNorm ``norm{i}``.
    """

    def __init__(
        self,
        *,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        use_checkpoint: bool = False,
    ):
        """
        Args:
            pretrain_img_size: image size of the pre-training; sets the size of the absolute
                position embedding (bicubically resized to every input).
            patch_size: patch size of the patch embedding (stride of stage 0).
            in_chans: input channels.
            embed_dim: channels C of stage 0; stage i has C * 2**i.
            depths: blocks per stage.
            num_heads: attention heads per stage.
            window_size: attention window size (tokens per side).
            mlp_ratio: MLP hidden size / channels.
            qkv_bias: bias in the qkv projection.
            qk_scale: attention scale; None = head_dim ** -0.5.
            drop_rate: dropout after the embedding, in MLPs and after attention projections.
            attn_drop_rate: dropout on attention weights.
            drop_path_rate: stochastic-depth rate of the last block; block k of all
                sum(depths) blocks gets ``drop_path_rate * k / (sum(depths) - 1)``.
            ape: learned absolute position embedding (1, C, S/p, S/p), S = pretrain_img_size.
            patch_norm: LayerNorm after the patch embedding.
            out_features: subset of ``res2 .. res{len(depths)+1}`` to return.
            use_checkpoint: gradient checkpointing of every block (saves memory in training).
        """
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"Swin: DEPTHS {list(depths)} and NUM_HEADS {list(num_heads)} "
                             "must have the same length")
        names = [f"res{i + 2}" for i in range(len(depths))]
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"Swin: OUT_FEATURES {list(out_features)} must be a non-empty "
                             f"subset of {names}")
        self.num_layers = len(depths)
        self.patch_size = patch_size
        self.ape = ape
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        if ape:
            res = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, res, res))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        dims = [embed_dim * 2**i for i in range(self.num_layers)]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(
                SwinStage(
                    dims[i], depth, heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                    attn_drop_rate, dpr[start:start + depth],
                    downsample=i < self.num_layers - 1, use_checkpoint=use_checkpoint,
                )
            )
        self._out_features = [n for n in names if n in out_features]
        self._out_feature_channels = {}
        self._out_feature_strides = {}
        for i, name in enumerate(names):
            if name in self._out_features:
                self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
                self._out_feature_channels[name] = dims[i]
                self._out_feature_strides[name] = patch_size * 2**i
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def size_divisibility(self) -> int:
        """Stride of the last stage (32 for patch size 4 and 4 stages)."""
        return self.patch_size * 2 ** (self.num_layers - 1)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (B, in_chans, H, W) -> {name: (B, C_i, H_i, W_i)} (see the class docstring)."""
        x = self.patch_embed(x)  # (B, C, Wh, Ww)
        b, _, wh, ww = x.shape
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(wh, ww), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (B, Wh*Ww, C)
        hw = (wh, ww)
        outs: Dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.layers):
            out, out_hw, x, hw = stage(x, hw)
            name = f"res{i + 2}"
            if name in self._out_features:
                out = getattr(self, f"norm{i}")(out)
                outs[name] = out.view(b, out_hw[0], out_hw[1], -1).permute(0, 3, 1, 2).contiguous()
        return outs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name],
                            stride=self._out_feature_strides[name])
            for name in self._out_features
        }


def swin_kwargs_from_cfg(cfg, in_chans: int = 3) -> Dict:
    """``MODEL.SWIN.*`` -> keyword arguments of :class:`SwinTransformer`."""
    s = cfg.MODEL.SWIN
    return {
        "pretrain_img_size": s.PRETRAIN_IMG_SIZE,
        "patch_size": s.PATCH_SIZE,
        "in_chans": in_chans,
        "embed_dim": s.EMBED_DIM,
        "depths": list(s.DEPTHS),
        "num_heads": list(s.NUM_HEADS),
        "window_size": s.WINDOW_SIZE,
        "mlp_ratio": s.MLP_RATIO,
        "qkv_bias": s.QKV_BIAS,
        "qk_scale": s.QK_SCALE,
        "drop_rate": s.DROP_RATE,
        "attn_drop_rate": s.ATTN_DROP_RATE,
        "drop_path_rate": s.DROP_PATH_RATE,
        "ape": s.APE,
        "patch_norm": s.PATCH_NORM,
        "out_features": list(s.OUT_FEATURES),
        "use_checkpoint": s.USE_CHECKPOINT,
    }


@BACKBONE_REGISTRY.register()
def build_swin_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Plain Swin backbone from ``MODEL.SWIN.*`` (e.g. for D2's ``SemanticSegmentor``).

    Returns:
        :class:`SwinTransformer` with outputs ``MODEL.SWIN.OUT_FEATURES`` (res2..res5, strides
        4..32 for patch size 4).
    """
    return SwinTransformer(**swin_kwargs_from_cfg(cfg, input_shape.channels))

