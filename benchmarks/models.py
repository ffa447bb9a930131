"""The benchmarked models: K-Net from this project's COCO configs, Detectron2's Mask R-CNN,
Cascade Mask R-CNN and PanopticFPN from D2's model-zoo configs, all with random weights (no
download).

:func:`calibrate_frozen_bn` gives the FrozenBN layers data-dependent statistics, so that random
R50 weights give finite activations (with identity FrozenBN the activations of a random R50
overflow, D2's box heads then drop the non-finite detections and the workload is not the one of
a trained model).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Sequence

import torch
from torch import nn

if TYPE_CHECKING:
    from detectron2.config import CfgNode

REPO_ROOT = Path(__file__).resolve().parents[1]

#: D2 model-zoo configs of the reference models.
D2_CONFIGS = {
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
    "cascade_mask_rcnn": "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
    "panoptic_fpn": "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
}
#: K-Net configs of this project.
KNET_CONFIGS = {
    "knet_instance": "configs/coco/instance-segmentation/knet_R50_1x.yaml",
    "knet_panoptic": "configs/coco/panoptic-segmentation/knet_R50_1x.yaml",
}
#: display names
MODEL_NAMES = {
    "knet_instance": "K-Net R50 instance",
    "knet_panoptic": "K-Net R50 panoptic",
    "mask_rcnn": "D2 Mask R-CNN R50-FPN",
    "cascade_mask_rcnn": "D2 Cascade Mask R-CNN R50-FPN",
    "panoptic_fpn": "D2 PanopticFPN R50",
}


def knet_cfg(key: str, device: str, opts: Sequence[str] = ()) -> CfgNode:
    """The K-Net config of ``key`` with random weights (``MODEL.WEIGHTS ""``)."""
    from knet_d2 import get_knet_cfg

    cfg = get_knet_cfg(
        str(REPO_ROOT / KNET_CONFIGS[key]),
        ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, *opts],
        freeze=False,
    )
    return cfg


def d2_config_file(name: str) -> str:
    """``detectron2.model_zoo.get_config_file(name)``; where ``detectron2.model_zoo`` does not
    import (it needs ``pkg_resources``, gone from setuptools >= 81) the same file is taken
    from the installed package's ``model_zoo/configs`` folder."""
    try:
        from detectron2 import model_zoo
    except ImportError:
        import detectron2

        path = Path(detectron2.__file__).parent / "model_zoo" / "configs" / name
        if not path.is_file():
            raise FileNotFoundError(f"D2 model-zoo config not found: {path}") from None
        return str(path)
    return model_zoo.get_config_file(name)


def d2_cfg(key: str, device: str, opts: Sequence[str] = ()) -> CfgNode:
    """A D2 model-zoo config with random weights, 100 detections, score threshold 0."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(d2_config_file(D2_CONFIGS[key]))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", device,
        # the workload of a trained detector: always 100 detections per image
        "TEST.DETECTIONS_PER_IMAGE", "100", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        *opts,
    ])
    return cfg


def build_cfg(key: str, device: str, opts: Sequence[str] = ()) -> CfgNode:
    """:func:`knet_cfg` for the ``knet_*`` keys, else :func:`d2_cfg`."""
    return knet_cfg(key, device, opts) if key.startswith("knet") else d2_cfg(key, device, opts)


def build_model_from_cfg(cfg: CfgNode, channels_last: bool = False) -> nn.Module:
    """``detectron2.modeling.build_model`` (+ channels_last), in eval mode."""
    from detectron2.modeling import build_model

    import knet_d2  # noqa: F401  (registers KNet)

    model = build_model(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


@torch.no_grad()
def calibrate_frozen_bn(model: nn.Module, batched_inputs: List[dict]) -> int:
    """Set every ``FrozenBatchNorm2d`` of ``model`` to normalise its input of one forward pass.

    Pre-hooks set ``running_mean`` / ``running_var`` to the per-channel mean / variance of the
    layer's input (weight 1, bias 0) before the layer runs, so the next layers already see the
    calibrated outputs. Turns random R50 weights into finite, trained-like activation scales.

    Returns:
        the number of calibrated layers.
    """
    from detectron2.layers import FrozenBatchNorm2d

    layers = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]

    def hook(module, inputs):
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)).clamp(min=1e-3))
        module.weight.fill_(1.0)
        module.bias.zero_()

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        model(batched_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return len(layers)


def input_format(model_key: str) -> str:
    """``INPUT.FORMAT`` of a model: K-Net configs are RGB, D2 model-zoo ones BGR."""
    return "RGB" if model_key.startswith("knet") else "BGR"


def to_format(image: torch.Tensor, fmt: str) -> torch.Tensor:
    """(3, H, W) RGB tensor -> the model's channel order."""
    return image.flip(0).contiguous() if fmt == "BGR" else image
