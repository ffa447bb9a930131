"""Small real photos for tests, and writing them to disk."""
from pathlib import Path

import cv2
import numpy as np


def small_photo(h: int = 72, w: int = 96, which: str = "astronaut") -> np.ndarray:
    """A small real BGR photo from scikit-image's samples."""
    import skimage.data

    rgb = getattr(skimage.data, which)()
    return cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (w, h), interpolation=cv2.INTER_AREA)


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path

