"""Small image files for the bad-input tests: random pixels, EXIF, unusual PIL modes."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def square_ids(h: int, w: int) -> np.ndarray:
    """Panoptic ids: a thing (id 1) in the top-left quarter on stuff (id 2)."""
    ids = np.full((h, w), 2, np.int64)
    ids[: h // 2, : w // 2] = 1
    return ids


def save_exif(path: Path, pixels: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif)


def make_image_mode(tmp_path: Path, kind: str) -> Tuple[Path, np.ndarray]:
    """Write a 20x30 image of ``kind``; return it and the RGB array it must read as."""
    h, w = 20, 30
    base = rgb(h, w)
    if kind == "grayscale":
        p = tmp_path / "grey.png"
        Image.fromarray(base[:, :, 0]).save(p)
        return p, np.repeat(base[:, :, :1], 3, axis=2)
    if kind == "rgba":  # alpha is dropped (D2 behaviour), colour kept
        p = tmp_path / "rgba.png"
        Image.fromarray(np.dstack([base, base[:, :, 0]]), mode="RGBA").save(p)
        return p, base
    if kind == "palette":
        p = tmp_path / "pal.png"
        im = Image.fromarray(base).convert("P")
        im.save(p)
        return p, np.asarray(im.convert("RGB"))
    if kind == "16bit":
        p = tmp_path / "grey16.png"
        a16 = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 109 % 65536).astype(np.uint16)
        Image.fromarray(a16).save(p)  # mode I;16
        assert Image.open(p).mode.startswith("I")
        return p, np.repeat((a16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    if kind == "cmyk":  # PIL's CMYK -> RGB: (255 - C, 255 - M, 255 - Y) for K = 0
        p = tmp_path / "cmyk.jpg"
        Image.new("CMYK", (w, h), (10, 200, 30, 0)).save(p)
        return p, np.broadcast_to(np.array([245, 55, 225], np.uint8), (h, w, 3))
    if kind == "exif_rotated":  # orientation 6: shown rotated 90 deg clockwise (30 x 20)
        p = tmp_path / "exif6.png"
        save_exif(p, base, 6)
        return p, np.ascontiguousarray(np.rot90(base, k=-1))
    if kind == "tiny":
        p = tmp_path / "tiny.png"
        Image.fromarray(base[:16, :16]).save(p)
        return p, base[:16, :16]
    raise AssertionError(kind)


IMAGE_KINDS = ("grayscale", "rgba", "palette", "16bit", "cmyk", "exif_rotated", "tiny")


def write_valid_jpeg(path: Path) -> bytes:
    Image.fromarray(rgb(64, 64)).save(path, quality=95)
    return path.read_bytes()
