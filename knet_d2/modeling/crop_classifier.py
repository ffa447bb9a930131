"""Class logits of the thing kernels from image crops around their masks
(``MODEL.KNET.CROP_CLASSIFIER``; not in the official K-Net, off by default; docs/reference.md §1.4).

K-Net classifies a kernel from features summed over its mask: the shape of a small object has to
survive that pooling at stride 8. This head looks at the object itself, scale-normalised, as
a small classifier of crops would: for every thing kernel of the last update stage,

    box    = bounding box of sigmoid(M) > 0.5, widened by MARGIN of its size on each side
             (the whole image when the mask is empty)                         (B*Np, 4)
    crop   = [image (3), sigmoid(M) (1)] resampled to SIZE x SIZE inside box  (B*Np, 4, S, S)
             (torchvision's roi_align; the mask is detached)
    logits = linear(mean_pixels(convs(crop)))                                 (B, Np, K)

and the logits are added to that stage's class logits. The linear layer starts at zero, so a
model with the head starts as K-Net. The box comes from the predicted mask: inference still
needs no box prediction and no NMS.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from .postprocessing import masks_to_boxes

__all__ = ["CropClassifier", "mask_boxes", "build_crop_classifier"]


def mask_boxes(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Bounding boxes of ``probs > threshold`` (:func:`~.postprocessing.masks_to_boxes`), the
    whole map where a mask is empty.

    Args:
        probs: (K, h, w) mask probabilities.

    Returns:
        (K, 4) float ``(x0, y0, x1, y1)`` in pixel units of the map (x1, y1 exclusive); the
        whole map ``(0, 0, w, h)`` where a mask is empty.
    """
    h, w = probs.shape[-2:]
    on = probs > threshold
    boxes = masks_to_boxes(on).tensor
    whole = torch.tensor([0.0, 0.0, float(w), float(h)], device=probs.device)
    return torch.where(on.flatten(1).any(dim=1)[:, None], boxes, whole)


class CropClassifier(nn.Module):
    """Class logits (B, Np, K) of Np thing kernels from crops of the image and their masks."""

    def __init__(self, num_classes: int, num_proposals: int, size: int = 16, channels: int = 32,
                 num_convs: int = 4, margin: float = 0.25):
        """
        Args:
            num_classes: K, the classifier's outputs (T + S, like the update stages').
            num_proposals: Np, the thing kernels (the first Np of a stage's kernels).
            size: S, side of the crops.
            channels: channels of the convolutions.
            num_convs: 3x3 conv + ReLU layers (the second and fourth stride 2).
            margin: the box grows by this fraction of its width / height on each side.
        """
        super().__init__()
        if size < 4 or num_convs < 1 or margin < 0:
            raise ValueError(f"MODEL.KNET.CROP_CLASSIFIER: SIZE >= 4, NUM_CONVS >= 1 and "
                             f"MARGIN >= 0 needed, got {size}, {num_convs}, {margin}")
        self.num_proposals = num_proposals
        self.size = size
        self.margin = margin
        layers: List[nn.Module] = []
        for i in range(num_convs):
            stride = 2 if i % 2 == 1 else 1
            layers += [nn.Conv2d(4 if i == 0 else channels, channels, 3, stride, 1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: (B, 3, H, W) normalised, padded image batch.
            mask_logits: (B, Np, h, w) thing mask logits at stride H / h.

        Returns:
            (B, Np, K) class logits.
        """
        b, n, h, w = mask_logits.shape
        probs = mask_logits.detach().float().sigmoid().reshape(b * n, 1, h, w)
        boxes = mask_boxes(probs[:, 0])
        wh = (boxes[:, 2:] - boxes[:, :2]) * self.margin
        boxes = torch.cat([boxes[:, :2] - wh, boxes[:, 2:] + wh], dim=1)
        idx = torch.arange(b * n, device=boxes.device, dtype=boxes.dtype)[:, None]
        masks = roi_align(probs, torch.cat([idx, boxes], dim=1), self.size, 1.0, 2, True)
        scale = images.shape[-1] / w
        img_idx = torch.div(idx, n, rounding_mode="floor")
        crops = roi_align(images.float(), torch.cat([img_idx, boxes * scale], dim=1), self.size,
                          1.0, 2, True)
        x = self.convs(torch.cat([crops, masks], dim=1))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1)).view(b, n, -1)

    def add_logits(self, images: torch.Tensor, mask_logits: torch.Tensor,
                   cls_logits: torch.Tensor) -> torch.Tensor:
        """A stage's class logits with the crop logits added to its thing kernels' ones.

        Args:
            images: (B, 3, H, W) normalised, padded image batch.
            mask_logits: (G*B, N, h, w) the stage's masks, N = Np (+ S stuff kernels, which
                are left alone); G > 1 when mask-denoising groups ride along as batch entries.
            cls_logits: (G*B, N, K) the stage's class logits.

        Returns:
            (G*B, N, K).
        """
        images = images.repeat(mask_logits.shape[0] // images.shape[0], 1, 1, 1)
        np_ = self.num_proposals
        crop = self(images, mask_logits[:, :np_])
        return torch.cat([cls_logits[:, :np_] + crop, cls_logits[:, np_:]], dim=1)

    def extra_repr(self) -> str:
        return f"proposals={self.num_proposals}, size={self.size}, margin={self.margin}"


def build_crop_classifier(cfg) -> Optional[CropClassifier]:
    """The head of ``MODEL.KNET.CROP_CLASSIFIER``, or None when it is not enabled."""
    k = cfg.MODEL.KNET
    c = k.CROP_CLASSIFIER
    if not c.ENABLED:
        return None
    return CropClassifier(k.NUM_THING_CLASSES + k.NUM_STUFF_CLASSES, k.NUM_PROPOSALS,
                          size=c.SIZE, channels=c.CHANNELS, num_convs=c.NUM_CONVS,
                          margin=c.MARGIN)
