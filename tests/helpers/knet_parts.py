"""The K-Net model parts at tiny dims (C=32 channels, N=5 kernels) on a CPU: FPN shapes and random
FPN maps, the neck, kernel head and update head built from them, randomised LayerNorms."""
import torch
from detectron2.layers import ShapeSpec
from torch import nn

from knet_d2.modeling import KernelGenerationHead, KernelUpdateHead, LocalizationFPN

C = 32
N = 5


def fpn_shapes(channels: int = C):
    return {f"p{i}": ShapeSpec(channels=channels, stride=2**i) for i in range(2, 6)}


def fpn_feats(b: int, h: int, w: int, channels: int = C, gen=None):
    """Random FPN maps for an (h, w) image: P_i has size ceil(h / 2^i) like a padded ResNet."""
    return {
        f"p{i}": torch.randn(b, channels, -(-h // 2**i), -(-w // 2**i), generator=gen)
        for i in range(2, 6)
    }


def make_neck(channels: int = C, **kw) -> LocalizationFPN:
    return LocalizationFPN(
        fpn_shapes(channels), in_features=["p2", "p3", "p4", "p5"], conv_dim=channels, **kw
    )


def make_kernel_head(num_thing=3, num_stuff=2, num_proposals=N, **kw) -> KernelGenerationHead:
    return KernelGenerationHead(
        in_channels=C,
        hidden_dim=C,
        num_proposals=num_proposals,
        num_thing_classes=num_thing,
        num_stuff_classes=num_stuff,
        **kw,
    )


def make_update_head(**kw) -> KernelUpdateHead:
    args = dict(in_channels=C, num_classes=7, num_heads=4, feedforward_channels=64)
    args.update(kw)
    return KernelUpdateHead(**args)


def randomise_norms(module: nn.Module):
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
