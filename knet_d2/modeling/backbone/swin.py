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
is taken *before* its patch merging. The building blocks (window helpers and masks,
``WindowAttention``, ``SwinBlock``, ``PatchMerging``, ``PatchEmbed``, ``SwinStage``) are in
:mod:`.swin_layers`; this module assembles them into the backbone.

Parameter names are those of the official Swin repositories (so official ImageNet checkpoints
load once ``knet_d2.checkpoint.swin``, run by ``tools/convert-pretrained-swin-model-to-d2.py``,
has dropped the classifier):
``patch_embed.proj.*``, ``patch_embed.norm.*``, ``absolute_pos_embed`` (APE only),
``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
attn.relative_position_index, norm2, mlp.fc1, mlp.fc2}.*``,
``layers.{i}.downsample.{reduction, norm}.*`` (i < 3) and ``norm{i}.*`` for each output stage.
``MODEL.BACKBONE.FREEZE_AT`` is not used: every stage trains (official ``frozen_stages=-1``).
"""
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from .swin_layers import PatchEmbed, SwinStage

__all__ = [
    "SwinTransformer",
    "build_swin_backbone",
]


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

