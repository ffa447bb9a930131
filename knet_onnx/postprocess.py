"""K-Net's inference post-processing in numpy, for one image.

The same rules as the PyTorch model (``knet_d2/modeling/postprocessing.py``) with the same
thresholds and tie rules:

* :func:`rescale_masks`: sigmoid, bilinear resize to the padded input size, crop to the
  resized image, bilinear resize to the output size (``align_corners=False``); the first
  resize through OpenCV when it enlarges by a power of two (as K-Net's stride-4 masks do);
* :func:`instance_inference`: the top-k (kernel, class) pairs by sigmoid class probability
  over the thing kernels and thing classes; no score threshold, no NMS; tight boxes of the
  thresholded masks;
* :func:`panoptic_inference`: per-pixel argmax of ``score * mask_prob`` over all kernels,
  then kernels visited by descending score (stable); things below ``instance_score_thresh``
  and kernels whose visible area is below ``overlap_thresh`` of their own mask are dropped;
* :func:`semantic_inference`: ``sum_n sigmoid(cls[n, c]) * mask_prob[n]``;
* :func:`semantic_segmentor_postprocess`: crop the padding, resize the logits to the output.

Differences to PyTorch are float rounding (``exp``, summation order, OpenCV's resize: about
1e-6) and, in :func:`instance_inference`, the order of pairs with exactly equal scores (numpy:
lower index first; ``torch.topk`` does not specify it).

:func:`rescale_masks` and :func:`panoptic_inference` split their work (groups of masks, bands of
rows) over ``threads`` threads (numpy and OpenCV release the GIL); every value is computed by
the same operations whatever the split, so the results do not depend on it.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterable, List, Tuple, TypeVar, Union

import numpy as np

from .image_ops import bilinear_enlarge, bilinear_resize, is_power_of_two_enlargement

_T = TypeVar("_T")

#: :func:`rescale_masks` resizes as many masks at a time as fit this many bytes as float32 maps
#: at the resized image's size (its intermediate maps; at least one), so that its temporary
#: arrays stay small, as knet_d2's does on the CPU
RESCALE_CHUNK_BYTES = 4 * 2**20

#: :func:`panoptic_inference` merges bands of rows whose ``score * mask_prob`` products of all
#: kernels take about this many bytes (at least one row)
MERGE_BAND_BYTES = 4 * 2**20

__all__ = [
    "RESCALE_CHUNK_BYTES",
    "MERGE_BAND_BYTES",
    "sigmoid",
    "rescale_masks",
    "masks_to_boxes",
    "instance_inference",
    "panoptic_inference",
    "semantic_inference",
    "semantic_segmentor_postprocess",
]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function, without overflow warnings for large negative inputs:
    ``1 / (1 + exp(-x))`` for x >= 0 and ``exp(x) / (1 + exp(x))`` below (``exp(-|x|)`` is
    computed once for both)."""
    x = np.asarray(x, dtype=np.float32)
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    denominator = e + np.float32(1)
    numerator = np.where(x >= 0, np.float32(1), e)
    return np.divide(numerator, denominator, out=denominator)


def _map_in_threads(fn: Callable[[int], _T], starts: Iterable[int], threads: int) -> List[_T]:
    """``[fn(s) for s in starts]``, run by up to ``threads`` threads."""
    starts = list(starts)
    if threads <= 1 or len(starts) <= 1:
        return [fn(s) for s in starts]
    with ThreadPoolExecutor(min(threads, len(starts))) as pool:
        return list(pool.map(fn, starts))


def rescale_masks(
    mask_logits: np.ndarray,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    threads: int = 1,
) -> np.ndarray:
    """Stride-4 mask logits (N, h4, w4) -> (N, H, W) float32 probabilities at ``output_size``.

    Args:
        padded_size: (Hp, Wp) of the padded network input.
        image_size: (h, w) of the resized image inside it.
        output_size: (H, W), the original image size.
        threads: groups of masks are rescaled by up to this many threads.
    """
    h4, w4 = mask_logits.shape[-2:]
    # PyTorch's model resizes with the exact scale factor when it is a power of two (same
    # source positions as in / out; see knet_d2's rescale_masks): OpenCV's positions too
    power_of_two = is_power_of_two_enlargement((h4, w4), padded_size)
    n = mask_logits.shape[0]
    out = np.empty((n,) + tuple(output_size), dtype=np.float32)
    # a few masks at a time (each value is computed by the same operations as for all at
    # once), and at least as many groups as threads
    chunk = max(min(RESCALE_CHUNK_BYTES // (4 * image_size[0] * image_size[1]),
                    -(-n // max(threads, 1))), 1)

    def rescale(start: int) -> None:
        part = sigmoid(mask_logits[start:start + chunk])  # in the threads, chunk by chunk
        if power_of_two:
            cropped = bilinear_enlarge(part, padded_size, crop=image_size)
        else:
            cropped = bilinear_resize(part, padded_size, crop=image_size)
        bilinear_resize(cropped, output_size, out=out[start:start + chunk])

    _map_in_threads(rescale, range(0, n, chunk), threads)
    return out


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(n, H, W) bool -> (n, 4) float32 tight XYXY boxes (x1, y1 exclusive), zeros if empty."""
    n, h, w = masks.shape
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    x_any, y_any = masks.any(axis=1), masks.any(axis=2)  # (n, W), (n, H)
    nonempty = x_any.any(axis=1)
    boxes[:, 0] = x_any.argmax(axis=1)
    boxes[:, 1] = y_any.argmax(axis=1)
    boxes[:, 2] = w - x_any[:, ::-1].argmax(axis=1)
    boxes[:, 3] = h - y_any[:, ::-1].argmax(axis=1)
    return boxes * nonempty[:, None]


def instance_inference(
    cls_logits: np.ndarray,
    mask_probs: np.ndarray,
    num_classes: int,
    max_per_image: int = 100,
    mask_threshold: float = 0.5,
) -> Dict[str, np.ndarray]:
    """Top-k (kernel, class) pairs of the thing kernels.

    Args:
        cls_logits: (Np, K) class logits of the thing kernels.
        mask_probs: (Np, H, W) their mask probabilities.
        num_classes: T, only the first T classes are considered.

    Returns:
        D2's field names: ``pred_masks`` (n, H, W) bool, ``scores`` (n,) float32 descending,
        ``pred_classes`` (n,) int64 contiguous ids, ``pred_boxes`` (n, 4) float32 XYXY;
        n = min(max_per_image, Np * T).
    """
    scores = sigmoid(cls_logits[:, :num_classes]).reshape(-1)
    k = min(max_per_image, scores.size)
    top = np.argsort(-scores, kind="stable")[:k]
    kernel = top // num_classes
    # thresholded before the gather: k bool maps are copied instead of k float32 ones
    masks = (mask_probs > mask_threshold)[kernel]
    return {
        "pred_masks": masks,
        "scores": scores[top],
        "pred_classes": (top % num_classes).astype(np.int64),
        "pred_boxes": masks_to_boxes(masks),
    }


def panoptic_inference(
    cls_logits: np.ndarray,
    mask_probs: np.ndarray,
    num_things: int,
    num_stuff: int,
    num_proposals: int,
    instance_score_thresh: float = 0.3,
    overlap_thresh: float = 0.6,
    mask_threshold: float = 0.5,
    threads: int = 1,
) -> Tuple[np.ndarray, List[Dict[str, Union[int, float, bool]]]]:
    """Thing/stuff merge into a segment-id map.

    Args:
        cls_logits: (Np + S, T + S) class logits (thing kernels first).
        mask_probs: (Np + S, H, W) mask probabilities.
        threads: bands of rows are merged by up to this many threads.

    Returns:
        (H, W) int32 segment ids (0 = void) and one dict per segment in id order:
        ``id``, ``category_id`` (contiguous), ``isthing``, ``score``.
    """
    n = num_proposals + num_stuff
    if cls_logits.shape != (n, num_things + num_stuff) or mask_probs.shape[0] != n:
        raise ValueError(
            f"expected ({n}, {num_things + num_stuff}) class logits and {n} masks, got "
            f"{cls_logits.shape} and {mask_probs.shape}"
        )
    probs = sigmoid(cls_logits)
    thing_probs = probs[:num_proposals, :num_things]
    scores = np.concatenate([
        thing_probs.max(axis=1), np.diagonal(probs[num_proposals:, num_things:])
    ]).astype(np.float32)
    labels = np.concatenate([
        thing_probs.argmax(axis=1), np.arange(num_stuff) + num_things
    ]).astype(np.int64)
    is_thing = np.arange(n) < num_proposals

    height, width = mask_probs.shape[1:]
    ids = np.empty((height, width), dtype=np.int64)
    rows = max(MERGE_BAND_BYTES // (4 * n * max(width, 1)), 1)

    def merge_band(start: int) -> np.ndarray:
        band = mask_probs[:, start:start + rows]
        ids[start:start + rows] = (scores[:, None, None] * band).argmax(axis=0)  # first max
        return np.count_nonzero(band >= mask_threshold, axis=(1, 2))

    orig = sum(_map_in_threads(merge_band, range(0, height, rows), threads),
               np.zeros(n, dtype=np.int64))
    area = np.bincount(ids.reshape(-1), minlength=n)
    ratio_ok = (
        area.astype(np.float32) / np.maximum(orig, 1).astype(np.float32)
        >= np.float32(overlap_thresh)
    )
    keep = (
        (area > 0) & (orig > 0) & ratio_ok
        & (~is_thing | (scores >= np.float32(instance_score_thresh)))
    )
    order = np.argsort(-scores, kind="stable")
    kept = order[keep[order]]
    segment_of_kernel = np.zeros(n, dtype=np.int32)
    segment_of_kernel[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    segments_info = [
        {
            "id": i + 1,
            "category_id": int(labels[k]),
            "isthing": bool(labels[k] < num_things),
            "score": float(scores[k]),
        }
        for i, k in enumerate(kept)
    ]
    return segment_of_kernel[ids], segments_info


def semantic_inference(cls_logits: np.ndarray, mask_probs: np.ndarray) -> np.ndarray:
    """(N, K) logits, (N, H, W) probabilities -> (K, H, W) float32 class scores."""
    weights = sigmoid(cls_logits)  # (N, K)
    n, h, w = mask_probs.shape
    return (weights.T @ mask_probs.reshape(n, h * w)).reshape(-1, h, w)


def semantic_segmentor_postprocess(
    logits: np.ndarray, image_size: Tuple[int, int], output_size: Tuple[int, int]
) -> np.ndarray:
    """D2's ``sem_seg_postprocess``: (K, Hp, Wp) logits cropped to ``image_size`` and resized
    to ``output_size`` -> (K, H, W) float32."""
    h, w = image_size
    return bilinear_resize(np.ascontiguousarray(logits[:, :h, :w]), output_size)
