"""Official Swin Transformer ImageNet checkpoints -> the names of knet_d2's Swin backbone.

The official checkpoints (microsoft/Swin-Transformer releases) already use the parameter names
of ``knet_d2.modeling.backbone.swin.SwinTransformer``; :func:`convert_swin_state_dict` only
drops what the detection backbone does not have and reshapes a classification-model absolute
position embedding. ``tools/convert-pretrained-swin-model-to-d2.py`` writes the result as a D2
pickle. (The mmdet / mmseg Swin names of the official K-Net releases are in ``mmdet_swin``.)
"""
import math
from typing import Dict, List, Tuple

import torch

from .loading import strip_prefix

__all__ = ["convert_swin_state_dict"]


def convert_swin_state_dict(
    state_dict: Dict[str, torch.Tensor]
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Official Swin ImageNet state dict -> the keys of knet_d2's ``SwinTransformer``.

    Names are kept (they already match); dropped are the classifier ``head.*``, the final
    classification ``norm.*`` (the backbone has per-stage ``norm{i}`` instead) and
    ``*.attn_mask`` buffers (recomputed for every input size here). A (1, L, C)
    ``absolute_pos_embed`` of the classification model is reshaped to (1, C, sqrt(L), sqrt(L)).
    A leading ``module.`` (DDP) is stripped.

    Returns:
        (converted state dict, sorted list of dropped keys).

    Raises:
        ValueError: the dict does not look like an official-layout Swin checkpoint.
    """
    sd = strip_prefix(state_dict, "module.")
    if "patch_embed.proj.weight" not in sd or not any(k.startswith("layers.") for k in sd):
        if "patch_embed.projection.weight" in sd or any(k.startswith("stages.") for k in sd):
            raise ValueError(
                "this is an mmdet/mmseg-layout Swin checkpoint (patch_embed.projection, "
                "stages.*); use the official Swin ImageNet checkpoint instead"
            )
        raise ValueError(
            "not a Swin checkpoint in the official layout: 'patch_embed.proj.weight' and "
            f"'layers.*' keys are missing (first keys: {sorted(sd)[:5]})"
        )
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"not a state dict of tensors: {bad[:5]} are not tensors")
    out, dropped = {}, []
    for k, v in sd.items():
        if k.startswith(("head.", "norm.")) or k.endswith(".attn_mask"):
            dropped.append(k)
            continue
        if k == "absolute_pos_embed" and v.dim() == 3:
            side = math.isqrt(v.shape[1])
            if side * side != v.shape[1]:
                raise ValueError(f"absolute_pos_embed {tuple(v.shape)}: token count not square")
            v = v.transpose(1, 2).reshape(1, v.shape[2], side, side)
        out[k] = v
    return out, sorted(dropped)
