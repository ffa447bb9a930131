"""Inference post-processing of K-Net (docs/reference.md §3, docs/architecture.md §9).

Pure functions on the final-stage outputs of one image:

* :func:`rescale_masks`: stride-4 mask logits -> probabilities at the output resolution;
* :func:`instance_inference`: top-k (kernel, class) pairs -> ``Instances``;
* :func:`panoptic_inference`: thing/stuff merge -> D2 ``(panoptic_seg, segments_info)``;
* :func:`semantic_inference`: per-class score maps for D2's ``sem_seg`` output.
"""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from torch import Tensor

__all__ = [
    "rescale_masks",
    "masks_to_boxes",
    "instance_inference",
    "panoptic_inference",
    "semantic_inference",
]


def _is_power_of_two_ratio(big: int, small: int) -> bool:
    ratio = big // small if small else 0
    return small > 0 and big == ratio * small and ratio & (ratio - 1) == 0


def _chunk_len(device: torch.device, item_bytes: int, cpu_budget: int) -> int:
    """How many items of ``item_bytes`` fit a chunk: ``cpu_budget`` bytes on the CPU (sized to
    stay in the cache), 256 MiB on other devices (few kernel launches); at least 1."""
    budget = cpu_budget if device.type == "cpu" else 256 * 2**20
    return max(budget // max(item_bytes, 1), 1)


def rescale_masks(
    mask_logits: Tensor,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Official ``rescale_masks``: sigmoid -> resize to the padded input -> crop -> resize.

    Two exact economies (the result is bit-identical to the three steps above):

    * when the padded size is a power-of-two multiple of the mask size (x4 in K-Net), the first
      resize computes only the pixels inside the image: ``upsample_bilinear2d`` to ``image_size``
      with the padded size's scale factors samples the same source positions with the same
      weights as resizing to ``padded_size`` and cropping, without the padding columns and
      without a strided copy of the crop;
    * masks go through both resizes ``chunk_size`` at a time, so the padded-resolution
      intermediate never exists for all N masks at once (peak memory); on the CPU a chunk
      whose intermediate stays in the cache (one 800x1333 mask) is also faster.

    Args:
        mask_logits: (N, h4, w4) mask logits at stride 4 of the padded batch.
        padded_size: (Hp, Wp) size of the padded network input.
        image_size: (h, w) size of the (resized, unpadded) image inside the padded input.
        output_size: (H, W) requested output size (the original image size).
        chunk_size: masks per chunk; default: an intermediate of at most 4 MiB on the CPU
            (cache-sized), 256 MiB on other devices (few kernel launches).

    Returns:
        (N, H, W) float mask probabilities; bilinear interpolation, ``align_corners=False``.
    """
    n, h4, w4 = mask_logits.shape
    (hp, wp), (h, w) = tuple(padded_size), tuple(image_size)
    output_size = tuple(output_size)
    # 1 / scale must equal h4 / Hp exactly in float: true for power-of-two ratios
    fused = _is_power_of_two_ratio(hp, h4) and _is_power_of_two_ratio(wp, w4)
    out = mask_logits.new_empty((n,) + output_size, dtype=torch.float32)
    if chunk_size is None:
        chunk_size = _chunk_len(mask_logits.device, 4 * h * w, cpu_budget=4 * 2**20)
    chunk_size = max(chunk_size, 1)
    # sigmoid of all masks in one call: vectorised kernels round their tail elements
    # differently, so per-chunk calls could differ from the reference in the last bit
    all_probs = mask_logits[None].float().sigmoid()
    for start in range(0, n, chunk_size):
        probs = all_probs[:, start : start + chunk_size]
        if fused:
            probs = torch.ops.aten.upsample_bilinear2d(
                probs, [h, w], False, float(hp // h4), float(wp // w4)
            )
        else:
            probs = F.interpolate(probs, size=(hp, wp), mode="bilinear", align_corners=False)
            probs = probs[:, :, :h, :w]
        # = F.interpolate(probs, output_size, "bilinear"), written in place (no copy)
        torch.ops.aten.upsample_bilinear2d.out(
            probs, list(output_size), False, None, None, out=out[None, start : start + chunk_size]
        )
    return out


def masks_to_boxes(masks: Tensor) -> Boxes:
    """Tight XYXY boxes of binary masks, all zeros for an empty mask.

    Same values as ``BitMasks(masks).get_bounding_boxes()`` but vectorised and kept on the
    masks' device (D2's version loops over masks and returns CPU boxes).

    Args:
        masks: (n, H, W) bool.

    Returns:
        ``Boxes`` with an (n, 4) float32 tensor ``[x0, y0, x1, y1]`` (x1, y1 exclusive).
    """
    n, h, w = masks.shape
    if n == 0:
        return Boxes(torch.zeros((0, 4), dtype=torch.float32, device=masks.device))
    x_any = masks.any(dim=1).to(torch.uint8)  # (n, W)
    y_any = masks.any(dim=2).to(torch.uint8)  # (n, H)
    x0 = x_any.argmax(dim=1)
    x1 = w - x_any.flip(1).argmax(dim=1)
    y0 = y_any.argmax(dim=1)
    y1 = h - y_any.flip(1).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    nonempty = x_any.any(dim=1)
    return Boxes(boxes * nonempty[:, None])


def instance_inference(
    cls_logits: Tensor,
    mask_probs: Tensor,
    num_classes_for_instances: int,
    max_per_image: int = 100,
    mask_threshold: float = 0.5,
) -> Instances:
    """Official instance output: the top-k (kernel, class) pairs by class probability.

    A kernel may be returned with several classes; no score threshold, no NMS, and the score
    is the sigmoid class probability only (no mask rescoring). For panoptic models pass only
    the thing kernels (``[:Np]``) and ``num_classes_for_instances = T``.

    Args:
        cls_logits: (N, K) class logits.
        mask_probs: (N, H, W) mask probabilities at the output resolution.
        num_classes_for_instances: only the first this many classes are considered.
        max_per_image: k of the top-k over the N * K' flattened pairs.
        mask_threshold: binarisation threshold of the masks.

    Returns:
        ``Instances`` of image size (H, W) with ``pred_masks`` (n, H, W) bool, ``scores`` (n,),
        ``pred_classes`` (n,) long, ``pred_boxes`` (tight boxes of the masks), n = min(k, N*K').
    """
    scores = cls_logits[:, :num_classes_for_instances].float().sigmoid()
    num_classes = scores.shape[1]
    k = min(max_per_image, scores.numel())
    top_scores, top_idx = scores.flatten().topk(k, sorted=True)
    kernel_idx = torch.div(top_idx, num_classes, rounding_mode="floor")
    classes = top_idx % num_classes
    if k >= mask_probs.shape[0]:  # threshold first: the gather then copies 1-byte masks
        masks = (mask_probs > mask_threshold)[kernel_idx]
    else:
        masks = mask_probs[kernel_idx] > mask_threshold
    result = Instances(tuple(mask_probs.shape[-2:]))
    result.pred_masks = masks
    result.scores = top_scores
    result.pred_classes = classes
    result.pred_boxes = masks_to_boxes(masks)
    return result


def panoptic_inference(
    cls_logits: Tensor,
    mask_probs: Tensor,
    num_things: int,
    num_stuff: int,
    num_proposals: int,
    instance_score_thresh: float = 0.3,
    overlap_thresh: float = 0.6,
    mask_threshold: float = 0.5,
) -> Tuple[Tensor, List[Dict[str, Union[int, float, bool]]]]:
    """Official ``merge_stuff_thing``, in D2's panoptic output format.

    1. Thing kernel k < Np: score/label = max/argmax of its thing-class probabilities; stuff
       kernel Np + j: score = its probability of class T + j, label T + j.
    2. ``ids = argmax_k(score_k * mask_prob_k)`` per pixel (over all kernels, no threshold).
    3. Kernels are visited by descending score: things with score < ``instance_score_thresh``
       are skipped (stuff never is); with ``area = #(ids == k)`` and
       ``orig = #(mask_prob_k >= mask_threshold)`` a kernel is skipped if area == 0,
       orig == 0 or area / orig < ``overlap_thresh``; otherwise its pixels become the next
       segment id 1, 2, 3, ... Unwritten pixels are 0 (void).

    Step 2 and the ``orig`` counts run over pixel chunks (:func:`_best_kernel_per_pixel`):
    same values, without the (N, H, W) product in memory.

    Since ``ids`` is fixed before the visit, whether a kernel is kept does not depend on the
    other kernels; the visiting order only numbers the segments. All of it is vectorised
    (the ratio is computed in float32 on the device instead of Python floats; ties in score
    are visited in kernel order).

    Args:
        cls_logits: (Np + S, T + S) class logits.
        mask_probs: (Np + S, H, W) mask probabilities.
        num_things: T. num_stuff: S. num_proposals: Np.

    Returns:
        panoptic_seg: (H, W) int32 segment ids, 0 = void.
        segments_info: one dict per segment, in id order, with ``"id"``, ``"category_id"``
        (contiguous), ``"isthing"`` and ``"score"``.
    """
    n = num_proposals + num_stuff
    assert cls_logits.shape == (n, num_things + num_stuff), cls_logits.shape
    assert mask_probs.shape[0] == n, mask_probs.shape
    probs = cls_logits.float().sigmoid()
    mask_probs = mask_probs.float()
    thing_scores, thing_labels = probs[:num_proposals, :num_things].max(dim=1)
    stuff_scores = probs[num_proposals:, num_things:].diagonal()
    stuff_labels = torch.arange(num_stuff, device=probs.device) + num_things
    scores = torch.cat([thing_scores, stuff_scores])
    labels = torch.cat([thing_labels, stuff_labels])
    is_thing = torch.arange(n, device=probs.device) < num_proposals

    ids, orig = _best_kernel_per_pixel(scores, mask_probs, mask_threshold)
    area = torch.bincount(ids.flatten(), minlength=n)
    ratio_ok = area.float() / orig.clamp(min=1).float() >= overlap_thresh
    keep = (area > 0) & (orig > 0) & ratio_ok & (~is_thing | (scores >= instance_score_thresh))

    order = torch.argsort(scores, descending=True, stable=True)
    kept = order[keep[order]]  # kept kernels in visiting order
    segment_of_kernel = torch.zeros(n, dtype=torch.int32, device=probs.device)
    segment_of_kernel[kept] = torch.arange(
        1, kept.numel() + 1, dtype=torch.int32, device=probs.device
    )
    panoptic_seg = segment_of_kernel[ids]

    # one host transfer to build the python list (labels < 2^24 are exact in float32)
    kept_info = torch.stack([labels[kept].float(), scores[kept]], dim=1).tolist()
    segments_info = [
        {
            "id": i + 1,
            "category_id": int(lab),
            "isthing": int(lab) < num_things,
            "score": float(sc),
        }
        for i, (lab, sc) in enumerate(kept_info)
    ]
    return panoptic_seg, segments_info


def _best_kernel_per_pixel(
    scores: Tensor, mask_probs: Tensor, mask_threshold: float, chunk_size: Optional[int] = None
) -> Tuple[Tensor, Tensor]:
    """``argmax_k(scores[k] * mask_probs[k])`` per pixel and ``#(mask_probs[k] >= threshold)``
    per kernel, over chunks of pixels.

    Exactly the values of the one-shot expressions (each product is the same float
    multiplication, ``argmax`` keeps the first of equal maxima in both, counts are integers),
    but the (N, chunk) product of a chunk stays in the cache on the CPU (about 2 MiB) instead
    of an (N, H, W) float tensor written and read back (167 MB for 153 kernels at 640 x 427).

    Args:
        scores: (N,) float kernel scores.
        mask_probs: (N, H, W) float mask probabilities.
        mask_threshold: a pixel counts for ``orig`` when its probability is >= this.
        chunk_size: pixels per chunk; default: an (N, chunk) product of about 2 MiB on the
            CPU, 256 MiB on other devices.

    Returns:
        ids: (H, W) int64 kernel index per pixel. orig: (N,) int64 pixel counts.
    """
    n, h, w = mask_probs.shape
    flat = mask_probs.reshape(n, h * w)
    if chunk_size is None:
        chunk_size = _chunk_len(mask_probs.device, 4 * n, cpu_budget=2 * 2**20)
    chunk_size = max(chunk_size, 1)
    weights = scores[:, None]
    ids = torch.empty(h * w, dtype=torch.int64, device=mask_probs.device)
    orig = torch.zeros(n, dtype=torch.int64, device=mask_probs.device)
    for start in range(0, h * w, chunk_size):
        part = flat[:, start : start + chunk_size]
        torch.argmax(weights * part, dim=0, out=ids[start : start + chunk_size])
        orig += (part >= mask_threshold).sum(dim=1)
    return ids.view(h, w), orig


def semantic_inference(cls_logits: Tensor, mask_probs: Tensor) -> Tensor:
    """Per-class score maps for D2's ``sem_seg`` output of panoptic models.

    K-Net has no official semantic output for its detection models; as in Mask2Former, the
    score of class c at a pixel is ``sum_n sigmoid(cls_logits[n, c]) * mask_probs[n]`` (sigmoid
    instead of M2F's softmax because K-Net's classifier is sigmoid-based).

    Args:
        cls_logits: (N, K) class logits.
        mask_probs: (N, H, W) mask probabilities.

    Returns:
        (K, H, W) scores; consumers take ``argmax(0)``.
    """
    return torch.einsum("nk,nhw->khw", cls_logits.float().sigmoid(), mask_probs.float())
