"""Image and label-map reading with errors that name the file (mappers, demo).

:func:`read_image` returns what Detectron2's ``detection_utils.read_image`` returns for every
ordinary image (same EXIF handling, same PIL conversions, so training and D2's evaluation
loader see the same pixels) and differs only where D2 gives an unclear error or a wrong image:

=========================== =======================================================================
input                       behaviour
=========================== =======================================================================
missing file                ``FileNotFoundError("image file not found: <path>")``
truncated / corrupt / empty ``ImageReadError("cannot read image <path>: <PIL's reason>")``; PIL
                            only notices damage that breaks decoding (a flipped byte inside the
                            compressed data may decode to wrong pixels without an error)
over PIL's pixel limit      ``ImageReadError`` naming the file and ``PIL.Image.MAX_IMAGE_PIXELS``
                            (PIL refuses > 2 x 89.5 Mpx as a "decompression bomb")
EXIF orientation 2..8       applied, as D2 does: the array is the displayed (transposed) image
                            and annotations must refer to it; see :func:`size_mismatch_hint`
grey ``L``, ``1``, ``P``,   converted by PIL (``RGBA``/``LA``/``PA``: alpha dropped, no
``RGBA``, ``LA``, ``CMYK``, compositing -- as D2)
``YCbCr``
16-bit grey (``I;16*``)     scaled to 8 bit by ``value >> 8`` (PIL itself clips it to 255, so D2
and 32-bit ``I``            returns an almost white image); ``I`` values outside 0..65535 are an
                            ``ImageReadError``. 16-bit RGB(A) PNGs are already 8-bit in PIL
                            (high byte)
float ``F`` and other       ``ImageReadError`` (no canonical 8-bit mapping)
modes PIL cannot convert
=========================== =======================================================================

:func:`read_label_map` reads semantic label PNGs (ids, not colours): single-channel modes are
returned as they are (16-bit ids kept), an RGB file is accepted only when its three channels
are equal.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
from detectron2.data import detection_utils as d2_utils
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = [
    "ImageReadError",
    "read_image",
    "read_label_map",
    "exif_orientation",
    "size_mismatch_hint",
]

#: EXIF tag of the orientation (1 = as stored; 5..8 swap height and width)
EXIF_ORIENTATION_TAG = 0x0112
_INT_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_LABEL_MODES = ("L", "P", "1") + _INT_GREY_MODES


class ImageReadError(OSError):
    """The file exists but cannot be decoded into the requested array (message names it)."""


def _open(path: str, what: str) -> Image.Image:
    """Open and fully decode ``path`` (so truncation is detected here), EXIF-transposed."""
    if not PathManager.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with PathManager.open(path, "rb") as f:
            image = Image.open(f)
            image.load()
    except Image.DecompressionBombError as e:
        raise ImageReadError(
            f"cannot read {what} {path}: {e} (raise PIL.Image.MAX_IMAGE_PIXELS to allow it)"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL's decode errors
        raise ImageReadError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from e
    # D2's own EXIF transpose (works around a Pillow bug); keeps D2's annotation convention.
    return d2_utils._apply_exif_orientation(image)


def _int_grey_to_8bit(image: Image.Image, path: str) -> Image.Image:
    """16-bit (or 32-bit int holding 16-bit values) grey -> ``L`` by ``value >> 8``."""
    arr = np.asarray(image)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
        raise ImageReadError(
            f"cannot read image {path}: 32-bit integer image (mode {image.mode}) with values "
            f"in [{int(arr.min())}, {int(arr.max())}], outside the 16-bit range; convert it to "
            "an 8-bit image"
        )
    return Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8), mode="L")


def read_image(file_name: str | os.PathLike, format: Optional[str] = None) -> np.ndarray:
    """Read an image as D2's ``read_image`` does, with the checks in the module docstring.

    Args:
        file_name: image path (anything ``PathManager`` opens).
        format: ``"RGB"``, ``"BGR"``, ``"L"``, ``"YUV-BT.601"``, another PIL mode, or ``None``
            (the stored mode, no conversion, no 16-bit scaling).

    Returns:
        (H, W, C) array (``(H, W)`` for single-channel modes with ``format=None``); uint8 for
        ``RGB``/``BGR``/``L`` (C = 3, 3, 1), float for ``YUV-BT.601``. (H, W) is the size
        after the EXIF transpose. The array may be read-only or a negative-stride view.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: it cannot be decoded or converted (the message says why).
    """
    path = str(file_name)
    image = _open(path, "image file")
    if format is None:
        return np.asarray(image)
    if image.mode in _INT_GREY_MODES:
        image = _int_grey_to_8bit(image, path)
    elif image.mode == "F":
        raise ImageReadError(
            f"cannot read image {path}: floating-point image (mode F) has no standard 8-bit "
            "mapping; convert it to an 8-bit image"
        )
    target = "RGB" if format in ("BGR", "YUV-BT.601") else format
    if format == "YUV-BT.601" or image.mode != target:
        try:
            if format == "YUV-BT.601":
                return d2_utils.convert_PIL_to_numpy(image, format)
            image = image.convert(target)
        except ValueError as e:  # "conversion from X to Y not supported"
            raise ImageReadError(
                f"cannot read image {path}: mode {image.mode} cannot be converted to {format} "
                f"({e})"
            ) from e
    arr = np.asarray(image)  # no convert() copy when the mode already matches
    if format == "L":
        return arr[:, :, None]
    if format == "BGR":
        return arr[:, :, ::-1]
    return arr


def read_label_map(file_name: str | os.PathLike, what: str = "label map") -> np.ndarray:
    """Read a label-id PNG (semantic segmentation ground truth) as an (H, W) integer array.

    ``L``/``P``/``1`` give uint8 (palette *indices* for ``P``), 16-bit files their ids as they
    are; EXIF orientation is applied like for images. RGB(A) files are accepted only when R, G
    and B are equal (a grey label map saved as RGB); anything else raises ``ImageReadError``
    (a colour-coded map would silently give wrong ids).

    Raises:
        FileNotFoundError: ``"<what> not found: <path>"``.
        ImageReadError: undecodable file or a mode that does not hold label ids.
    """
    path = str(file_name)
    image = _open(path, what)
    if image.mode in _LABEL_MODES:
        arr = np.asarray(image)
        return arr.astype(np.uint8) if arr.dtype == bool else arr
    if image.mode in ("RGB", "RGBA"):
        arr = np.asarray(image)
        if (arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 0] == arr[:, :, 2]).all():
            return arr[:, :, 0]
        raise ImageReadError(
            f"{what} {path} is a colour image (mode {image.mode}, channels differ); expected a "
            "single-channel map of class ids (mode L, P or 16-bit)"
        )
    raise ImageReadError(
        f"{what} {path} has mode {image.mode}; expected a single-channel map of class ids "
        "(mode L, P or 16-bit)"
    )


def exif_orientation(file_name: str | os.PathLike) -> int:
    """The EXIF orientation of an image file (1 when absent or unreadable); reads the header."""
    try:
        with PathManager.open(str(file_name), "rb") as f, Image.open(f) as image:
            return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # a hint helper: never mask the caller's own error
        return 1


def size_mismatch_hint(
    file_name: str | os.PathLike, image_hw: Tuple[int, int], other_hw: Tuple[int, int]
) -> str:
    """Explain a size mismatch caused by EXIF rotation, or return ``""``.

    Args:
        file_name: the image file.
        image_hw: (H, W) of the image as read (after the EXIF transpose).
        other_hw: (H, W) the annotation expects.
    """
    if tuple(image_hw) != tuple(other_hw)[::-1]:
        return ""
    orientation = exif_orientation(file_name)
    if orientation not in (5, 6, 7, 8):
        return ""
    return (
        f" The image has EXIF orientation {orientation} (rotated by 90 degrees); like "
        "Detectron2, K-Net applies it when reading, so annotations (height/width, masks, "
        "panoptic/semantic PNGs) must refer to the rotated image. Re-annotate it, or save the "
        "image with the rotation applied (PIL.ImageOps.exif_transpose) and fix the annotation."
    )
