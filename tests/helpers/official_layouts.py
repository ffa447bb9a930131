"""Small models of the real configs, and what the official K-Net code saves for them.

The names come from an inverse mapping written here from docs/reference.md §4.3 (independent of
the converter's rules), plus official-only keys (mmdet ``num_batches_tracked``) and, for Swin, the
mmdet/mmseg ``nn.Unfold`` channel order of the patch-merging weights (derived numerically).
"""
import re

import torch
from detectron2.modeling import build_model
from torch import nn

from tests.helpers.paths import REPO_ROOT, load_config

COCO = REPO_ROOT / "configs/coco"
ADE = REPO_ROOT / "configs/ade20k/semantic-segmentation"

SMALL_HEADS = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "MODEL.KNET.NUM_HEADS", "4", "MODEL.KNET.FFN_DIM", "64",
]
SMALL_DET = SMALL_HEADS + [
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.KNET.HIDDEN_DIM", "32",
    "MODEL.KNET.NECK.CONV_DIM", "32", "MODEL.KNET.NUM_PROPOSALS", "5",
]
R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
# A ResNet-50 (bottlenecks, conv3) a few channels wide.
NARROW_R50 = [
    "MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "32", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
]
SMALL_SWIN = [
    "MODEL.SWIN.EMBED_DIM", "32", "MODEL.SWIN.DEPTHS", "[2, 2, 2, 2]",
    "MODEL.SWIN.NUM_HEADS", "[1, 2, 4, 8]", "MODEL.SWIN.WINDOW_SIZE", "3",
]
SMALL_SEM = SMALL_HEADS + NARROW_R50 + [
    "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN",
    "MODEL.KNET.SEM.CHANNELS", "64", "MODEL.KNET.SEM.UPDATOR_CHANNELS", "32",
    "MODEL.KNET.SEM.AUX_CHANNELS", "32",
]



def build(config, opts, seed):
    """A model of ``config`` with every floating tensor randomised (distinct values per tensor,
    so a mapping that swaps two same-shaped tensors is caught)."""
    torch.manual_seed(seed)
    model = build_model(load_config(config, opts))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model.eval()


def unfold_positions(c):
    """perm with ``unfold_vector = concat_vector[perm]`` for C channels, derived numerically:
    label every value of a 2x2xC patch, gather it the mmdet way (nn.Unfold) and the official
    way (concat of the four sub-grids) and match the labels."""
    x = torch.arange(4 * c, dtype=torch.float32).reshape(1, c, 2, 2)
    unfold = nn.Unfold(kernel_size=2, stride=2)(x)[0, :, 0]
    xs = x.permute(0, 2, 3, 1)
    concat = torch.cat(
        [xs[:, 0::2, 0::2], xs[:, 1::2, 0::2], xs[:, 0::2, 1::2], xs[:, 1::2, 1::2]], dim=-1
    ).reshape(-1)
    return torch.tensor([int((concat == v).nonzero()) for v in unfold])


def official_swin(rest, value):
    """Official Swin name/value (after ``bottom_up.`` or ``backbone.``) -> mmdet/mmseg's."""
    name = rest.replace("patch_embed.proj.", "patch_embed.projection.")
    name = re.sub(r"^layers\.(\d+)\.", r"stages.\1.", name)
    name = name.replace(".attn.", ".attn.w_msa.")
    name = name.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
    if name.endswith("downsample.reduction.weight"):
        value = value[:, unfold_positions(value.shape[1] // 4)]
    elif ".downsample.norm." in name:
        value = value[unfold_positions(value.shape[0] // 4)]
    return name, value


def official_resnet(rest, stem):
    """D2 ResNet name (after ``bottom_up.`` / ``backbone.``) -> mmdet / mmseg name."""
    m = re.fullmatch(r"stem\.conv(\d)\.(norm\.)?(\w+)", rest)
    if m:
        if stem == "mmdet":  # 7x7 stem: conv1 + bn1
            return f"{'bn1' if m.group(2) else 'conv1'}.{m.group(3)}"
        idx = {"1": 0, "2": 3, "3": 6}[m.group(1)] + (1 if m.group(2) else 0)  # deep stem
        return f"stem.{idx}.{m.group(3)}"
    stage, block, tail = re.fullmatch(r"res(\d)\.(\d+)\.(.+)", rest).groups()
    tail = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", tail)
    tail = re.sub(r"^shortcut\.norm\.", "downsample.1.", tail)
    tail = re.sub(r"^shortcut\.", "downsample.0.", tail)
    tail = re.sub(r"^conv2_offset\.", "conv2.conv_offset.", tail)
    return f"layer{int(stage) - 1}.{block}.{tail}"


def official_update_head(rest):
    if rest.startswith("attention."):
        return "attention.attn." + rest[len("attention."):]
    if rest.startswith("feat_transform."):
        return "feat_transform.conv." + rest[len("feat_transform."):]
    return rest


def official_conv_module(rest):
    """knet_d2 decode-head name -> mmseg ConvModule name (``<m>.conv.*`` / ``<m>.bn.*``)."""
    if rest.startswith("conv_seg."):
        return rest
    m = re.fullmatch(r"(.+)\.norm\.(\w+)", rest)
    if m:
        return f"{m.group(1)}.bn.{m.group(2)}"
    m = re.fullmatch(r"(.+)\.(weight|bias)", rest)
    return f"{m.group(1)}.conv.{m.group(2)}"


def mmdet_layout(model, swin=False):
    """What ZwwWayne/K-Net saves for this network: ``state_dict`` of the mmdet model."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.clone()
        if k.startswith("backbone.bottom_up."):
            rest = k[len("backbone.bottom_up."):]
            if swin:
                name, v = official_swin(rest, v)
            else:
                name = official_resnet(rest, "mmdet")
                if name.endswith("running_mean"):  # mmdet BN has a step counter
                    out["backbone." + name.replace("running_mean", "num_batches_tracked")] = (
                        torch.tensor(7)
                    )
            out["backbone." + name] = v
        elif k.startswith("backbone.fpn_"):
            kind, level, p = re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)\.(\w+)", k).groups()
            convs = "lateral_convs" if kind == "lateral" else "fpn_convs"
            out[f"neck.{convs}.{int(level) - 2}.conv.{p}"] = v
        elif k.startswith("neck."):
            out["rpn_head.localization_fpn." + k[len("neck."):]] = v
        elif k.startswith("kernel_head."):
            out["rpn_head." + k[len("kernel_head."):]] = v
        else:
            stage, rest = re.fullmatch(r"update_heads\.(\d+)\.(.+)", k).groups()
            out[f"roi_head.mask_head.{stage}.{official_update_head(rest)}"] = v
    return out


def mmseg_layout(model, swin=False):
    """What mmsegmentation saves for this network."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.clone()
        if k.startswith("backbone."):
            rest = k[len("backbone."):]
            if swin:
                name, v = official_swin(rest, v)
            else:
                name = official_resnet(rest, "mmseg")
            out["backbone." + name] = v
        elif k.startswith("sem_seg_head.kernel_generate_head."):
            rest = k[len("sem_seg_head.kernel_generate_head."):]
            out["decode_head.kernel_generate_head." + official_conv_module(rest)] = v
        elif k.startswith("sem_seg_head.auxiliary_head."):
            rest = k[len("sem_seg_head.auxiliary_head."):]
            out["auxiliary_head." + official_conv_module(rest)] = v
        else:
            stage, rest = re.fullmatch(r"sem_seg_head\.kernel_update_head\.(\d+)\.(.+)", k).groups()
            out[f"decode_head.kernel_update_head.{stage}.{official_update_head(rest)}"] = v
    return out


def save_mmcv(path, state_dict):
    torch.save({"meta": {"mmdet_version": "2.17.0", "CLASSES": ["a", "b"], "epoch": 12},
                "state_dict": state_dict}, path)

