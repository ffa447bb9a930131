"""Bilinear resizing (``align_corners=False``) of feature maps, fast on the CPU for small maps.

Every resize in K-Net's neck, kernel-update heads and semantic decode heads is
``F.interpolate(x, size, mode="bilinear", align_corners=False)`` (docs/reference.md §1.2, §1.5).
That map is linear and separable: with ``R_h`` (H, h) and ``R_w`` (W, w) the 1-D interpolation
matrices (two non-zeros per row: the weights PyTorch gives source pixels ``i0`` and ``i0 + 1`` of
output pixel ``o``, ``src = (o + 0.5) * h / H - 0.5`` clamped at 0), the resized map is
``R_h @ x @ R_w^T``. On the CPU, PyTorch's bilinear kernel (and its backward most of all) runs
several times slower than those two small matrix products for the maps a small K-Net trains on
(sides up to 64; figures in benchmarks/RESULTS.md). :func:`bilinear_resize` therefore takes the
matrix form there and ``F.interpolate`` everywhere else:

* on other devices (their kernels are fast), for larger maps (the dense products grow with the
  input side, the direct kernel does not), and for dtypes other than float32 / float64 /
  bfloat16;
* for bfloat16 when the interpolation weights are not exact in bfloat16 (they are for integer
  scale factors up to 128: multiples of ``1 / (2 s)``);
* while tracing (``torch.jit.trace``, ONNX export) or compiling (``torch.compile``): the
  matrices depend on the traced sizes, the interpolation node does not.

Both forms give the same values up to float rounding, in the forward and in the gradient. In
bfloat16 the matrix form rounds twice (its first product is bfloat16 too), the kernel once (it
computes in float32): errors up to twice the kernel's, still within bfloat16's precision.
"""
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["bilinear_resize", "interpolation_matrix", "MATRIX_FORM_MAX_SIDE"]

#: largest input side (h and w) resized by matrix products on the CPU
MATRIX_FORM_MAX_SIDE = 64

_MATRIX_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


@lru_cache(maxsize=256)
def _interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Cached :func:`interpolation_matrix` (CPU); None for bfloat16 weights that are not exact."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    frac = src - i0
    rows = torch.arange(n_out)
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    matrix.index_put_((rows, i0), 1 - frac, accumulate=True)
    matrix.index_put_((rows, i1), frac, accumulate=True)
    cast = matrix.to(dtype)
    # float32 rounds the weights as PyTorch's kernel does (it computes them in float32);
    # bfloat16's 8 bits would round them far more than its kernel (float32 weights) does
    if dtype == torch.bfloat16 and not torch.equal(cast.to(torch.float64), matrix):
        return None
    return cast


def interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n_out, n_in) matrix of 1-D linear interpolation with ``align_corners=False``.

    Row ``o`` holds the weights ``F.interpolate(..., mode="linear", align_corners=False)`` gives
    the input samples of output sample ``o`` (PyTorch's source index, clamped at 0; at the last
    sample both weights fall on it). Raises ValueError for bfloat16 when the weights are not
    exact in it (ratios whose weights are not multiples of ``1 / 256``).
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"interpolation_matrix: sizes must be positive, got {n_in} -> {n_out}")
    matrix = _interpolation_matrix(int(n_in), int(n_out), dtype)
    if matrix is None:
        raise ValueError(
            f"interpolation_matrix: the weights of {n_in} -> {n_out} are not exact in {dtype}"
        )
    return matrix


def _matrices(
    x: torch.Tensor, size: Tuple[int, int]
) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(R_h, R_w^T) for resizing ``x`` by matrix products, or None where F.interpolate is used."""
    if x.dim() != 4 or x.device.type != "cpu" or x.dtype not in _MATRIX_DTYPES:
        return None
    h, w = x.shape[-2:]
    if max(h, w) > MATRIX_FORM_MAX_SIDE or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    rows = _interpolation_matrix(int(h), int(size[0]), x.dtype)
    cols = _interpolation_matrix(int(w), int(size[1]), x.dtype)
    if rows is None or cols is None:
        return None
    return rows, cols.t()


def bilinear_resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``, no antialiasing) of x to ``size``.

    Args:
        x: (B, C, h, w) float tensor.
        size: (H, W) output size.

    Returns:
        (B, C, H, W); ``x`` itself when its size is already ``size``.
    """
    size = tuple(size)  # not int(): a traced size must stay symbolic for F.interpolate
    if tuple(x.shape[-2:]) == size:
        return x
    matrices = _matrices(x, size)
    if matrices is None:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    rows, cols_t = matrices
    # along w first: (B*C*h, w) @ (w, W) is one plain matrix product on a contiguous x
    return torch.matmul(rows, torch.matmul(x, cols_t))
