"""ADE20K SceneParsing-150 label conversion to the Detectron2 convention.

The official ``ADEChallengeData2016/annotations/*.png`` use 0 = "other" (not evaluated) and
1..150 = classes. D2's ``ade20k_sem_seg_{train,val}`` expect
``annotations_detectron2/*.png`` with 0..149 = classes and 255 = ignore, i.e. ``label - 1``
in uint8 arithmetic.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["convert_ade20k_label", "convert_ade20k_split"]


def convert_ade20k_label(
    png_in: str | os.PathLike, png_out: str | os.PathLike, num_classes: int = 150
) -> None:
    """Write ``png_in`` (0 = other, 1..num_classes) as ``png_out`` (0..num_classes-1, 255).

    Raises:
        FileNotFoundError: ``png_in`` does not exist.
        ValueError: ``png_in`` is not a single-channel label image or has values above
            ``num_classes``.
    """
    if not os.path.isfile(png_in):
        raise FileNotFoundError(f"ADE20K label file not found: {png_in}")
    with Image.open(png_in) as img:
        if img.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{png_in}: expected a single-channel label PNG, got mode {img.mode}")
        label = np.asarray(img).astype(np.int64)
    if label.ndim != 2:
        raise ValueError(f"{png_in}: expected a 2-D label map, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > num_classes):
        raise ValueError(
            f"{png_in}: label values must be in [0, {num_classes}], found "
            f"[{label.min()}, {label.max()}]"
        )
    out = np.where(label == 0, 255, label - 1).astype(np.uint8)
    Path(png_out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(png_out)


def convert_ade20k_split(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> int:
    """Convert every ``*.png`` in ``src_dir`` into ``dst_dir``; returns the number of files."""
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"ADE20K annotation directory not found: {src}")
    files = sorted(src.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no *.png label files in {src}")
    for f in files:
        convert_ade20k_label(f, Path(dst_dir) / f.name)
    return len(files)
