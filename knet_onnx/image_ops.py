"""Image operations of the exported models' pre- and post-processing, in numpy.

Each function reproduces the operation the PyTorch side uses, so that the runtime's outputs
equal the model's:

* :func:`read_image`: OpenCV decode to BGR (EXIF orientation applied, like D2's ``read_image``);
* :func:`shortest_edge_size` + :func:`pil_bilinear_resize`: D2's ``ResizeShortestEdge`` test
  resize, which resizes uint8 images with PIL's bilinear filter (antialiased when shrinking,
  8-bit fixed-point arithmetic): reproduced bit for bit;
* :func:`normalize_and_pad`: ``(x - mean) / std`` then zero padding to the size divisibility
  (D2 ``ImageList.from_tensors``);
* :func:`bilinear_resize`: ``torch.nn.functional.interpolate(..., mode="bilinear",
  align_corners=False)`` (no antialiasing), for mask probabilities and logits;
* :func:`bilinear_enlarge`: the same for enlarging only, through OpenCV (multi-threaded):
  within one float32 rounding step of PyTorch's values instead of bit-identical.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "read_image",
    "shortest_edge_size",
    "pil_bilinear_resize",
    "normalize_and_pad",
    "bilinear_resize",
    "bilinear_enlarge",
    "is_power_of_two_enlargement",
]

#: PIL's fixed-point precision of 8-bit resampling coefficients (Resample.c)
_PRECISION_BITS = 32 - 8 - 2


def read_image(path: Union[str, Path]) -> np.ndarray:
    """(H, W, 3) uint8 BGR image of ``path``; raises ``ValueError`` naming the file when
    OpenCV cannot decode it (missing files raise ``FileNotFoundError``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can decode")
    return image


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> Tuple[int, int]:
    """(new_h, new_w) of D2's ``ResizeShortestEdge.get_output_shape``: the short edge becomes
    ``short``, then both shrink so that the long edge is at most ``max_size``."""
    size = float(short)
    scale = size / min(height, width)
    if height < width:
        new_h, new_w = size, scale * width
    else:
        new_h, new_w = scale * height, size
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def _pil_coefficients(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """PIL's bilinear taps along one axis: source indices (out, K) and fixed-point weights
    (out, K) int64, weight 0 for unused taps (``precompute_coeffs`` + ``normalize_coeffs_8bpc``
    of Pillow's Resample.c)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear (triangle) filter has support 1
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, ksize), dtype=np.int64)
    weight = np.zeros((out_size, ksize), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        taps = [max(0.0, 1.0 - abs((x + xmin - center + 0.5) / filterscale)) for x in range(xmax)]
        total = sum(taps)
        for x, w in enumerate(taps):
            w = w / total if total != 0.0 else w
            index[xx, x] = xmin + x
            weight[xx, x] = int(w * (1 << _PRECISION_BITS) + (0.5 if w >= 0 else -0.5))
    return index, weight


def _pil_resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One pass of PIL's 8-bit resampling along ``axis`` (0: rows, 1: columns) of a uint8
    (H, W, C) image: rounded fixed-point sum, clipped to 0..255."""
    index, weight = _pil_coefficients(image.shape[axis], out_size)
    src = image.astype(np.int64)
    acc = np.full(
        image.shape[:axis] + (out_size,) + image.shape[axis + 1:],
        1 << (_PRECISION_BITS - 1), dtype=np.int64,
    )
    shape = [1, 1, 1]
    shape[axis] = out_size
    for k in range(index.shape[1]):
        acc += np.take(src, index[:, k], axis=axis) * weight[:, k].reshape(shape)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def pil_bilinear_resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))`` without PIL.

    Args:
        image: (H, W, C) uint8.
        size: (h, w) output size.

    Returns:
        (h, w, C) uint8, bit-identical to Pillow: horizontal pass first into a uint8
        intermediate, then the vertical pass; a pass is skipped when its size is unchanged.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    out_h, out_w = size
    if image.shape[1] != out_w:
        image = _pil_resample_axis(image, out_w, axis=1)
    if image.shape[0] != out_h:
        image = _pil_resample_axis(image, out_h, axis=0)
    return image


def normalize_and_pad(
    images: Sequence[np.ndarray],
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    size_divisibility: int,
    padding_constraints: Optional[dict] = None,
) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """Normalised, zero-padded float32 batch as the model builds it.

    Args:
        images: (H_i, W_i, 3) uint8 images in the graph's channel order.
        size_divisibility: pad height and width up to a multiple of this (0: no rounding).
        padding_constraints: D2's ``{"size_divisibility": d, "square_size": s}`` (optional).

    Returns:
        (B, 3, Hp, Wp) float32 batch (Hp, Wp = largest size, rounded up), and the (H_i, W_i).
    """
    constraints = padding_constraints or {}
    if "size_divisibility" in constraints:  # as D2: the constraint wins when present
        size_divisibility = constraints["size_divisibility"]
    sizes = [(int(im.shape[0]), int(im.shape[1])) for im in images]
    hp, wp = max(s[0] for s in sizes), max(s[1] for s in sizes)
    if constraints.get("square_size", 0) > 0:
        hp = wp = constraints["square_size"]
    if size_divisibility > 1:
        hp = -(-hp // size_divisibility) * size_divisibility
        wp = -(-wp // size_divisibility) * size_divisibility
    mean = np.asarray(pixel_mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(pixel_std, dtype=np.float32).reshape(-1, 1, 1)
    batch = np.zeros((len(images), 3, hp, wp), dtype=np.float32)
    for i, (im, (h, w)) in enumerate(zip(images, sizes)):
        batch[i, :, :h, :w] = (im.transpose(2, 0, 1).astype(np.float32) - mean) / std
    return batch, sizes


def _linear_taps(in_size: int, out_size: int, scale: Optional[float]):
    """Source indices and weights of PyTorch's ``align_corners=False`` linear interpolation
    (``area_pixel_compute_source_index``), computed in float32 like its CPU kernel."""
    step = np.float32(scale) if scale is not None else np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * step - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = src.astype(np.int64)
    lam1 = (src - i0.astype(np.float32)).astype(np.float32)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, np.float32(1) - lam1, lam1


def bilinear_resize(
    x: np.ndarray,
    size: Tuple[int, int],
    crop: Optional[Tuple[int, int]] = None,
    scale: Optional[Tuple[float, float]] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` on (..., h, w) float32.

    Args:
        x: (..., h, w) float32.
        size: (H, W) output size.
        crop: compute only output rows < crop[0] and columns < crop[1] (the result of resizing
            to ``size`` then cropping), as :func:`knet_d2`'s ``rescale_masks`` does.
        scale: source pixels per output pixel along (H, W) instead of ``in / out`` (PyTorch's
            ``1 / scale_factor``).
        out: float32 array of the result's shape to write the result into (returned).

    Returns:
        (..., H, W) or (..., crop[0], crop[1]) float32.
    """
    h, w = x.shape[-2:]
    out_h, out_w = size
    keep_h, keep_w = crop if crop is not None else size
    y0, y1, ly0, ly1 = _linear_taps(h, out_h, None if scale is None else scale[0])
    x0, x1, lx0, lx1 = _linear_taps(w, out_w, None if scale is None else scale[1])
    y0, y1, ly0, ly1 = y0[:keep_h], y1[:keep_h], ly0[:keep_h, None], ly1[:keep_h, None]
    x0, x1, lx0, lx1 = x0[:keep_w], x1[:keep_w], lx0[:keep_w], lx1[:keep_w]
    x = x.astype(np.float32, copy=False)
    # width first, then height: PyTorch's order h0 * (w0 * v00 + w1 * v01) + h1 * (...);
    # accumulated in place (the same float operations, fewer temporary arrays). np.take with
    # mode="clip" gathers faster than fancy indexing and writes into `out` unbuffered; the
    # taps are always in range, so clipping never changes an index.
    cols = np.take(x, x0, axis=-1, mode="clip")
    cols *= lx0
    right = np.take(x, x1, axis=-1, mode="clip")
    right *= lx1
    cols += right  # (..., h, keep_w)
    out = np.take(cols, y0, axis=-2, out=out, mode="clip")
    out *= ly0
    below = np.take(cols, y1, axis=-2, mode="clip")
    below *= ly1
    out += below
    return out


def is_power_of_two_enlargement(size: Tuple[int, int], out_size: Tuple[int, int]) -> bool:
    """Whether (H, W) ``out_size`` is (h * 2^a, w * 2^b) for (h, w) ``size`` (a, b >= 0)."""
    for small, big in zip(size, out_size):
        ratio = big // small if small > 0 else 0
        if ratio == 0 or big != ratio * small or ratio & (ratio - 1):
            return False
    return True


def bilinear_enlarge(
    x: np.ndarray,
    size: Tuple[int, int],
    crop: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """:func:`bilinear_resize` of (N, h, w) float32 maps enlarged by a power of two along each
    axis (``size = (h * 2^a, w * 2^b)``), through ``cv2.resize`` (``INTER_LINEAR``, one map
    per call, OpenCV's threads): several times faster than the numpy form.

    At these ratios OpenCV's linear interpolation takes the same source pixels and weights as
    PyTorch's ``align_corners=False`` with the scale factor, and the values agree within about
    one float32 rounding step (tests/export/test_onnx_building_blocks.py). Other ratios are
    refused: OpenCV computes the source positions in float64, PyTorch in float32, and at
    non-integer ratios the values then differ by up to about 1e-5 relative; when shrinking,
    by up to about 1e-4.

    Args:
        x: (N, h, w) float32.
        size: (H, W) output size.
        crop: keep only output rows < crop[0] and columns < crop[1].

    Returns:
        (N, H, W) or (N, crop[0], crop[1]) float32.
    """
    n, h, w = x.shape
    out_h, out_w = size
    if not is_power_of_two_enlargement((h, w), (out_h, out_w)):
        raise ValueError(
            f"bilinear_enlarge: {(h, w)} -> {(out_h, out_w)} is not a power-of-two enlargement"
        )
    keep_h, keep_w = crop if crop is not None else size
    out = np.empty((n, keep_h, keep_w), dtype=np.float32)
    x = x.astype(np.float32, copy=False)
    for i in range(n):  # OpenCV resizes one (h, w) map per call, in parallel inside
        out[i] = cv2.resize(x[i], (out_w, out_h), interpolation=cv2.INTER_LINEAR)[:keep_h, :keep_w]
    return out
