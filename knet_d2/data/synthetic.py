"""Deterministic synthetic segmentation data written in the real COCO / D2 formats.

This module generates whole splits (:func:`generate_synthetic_dataset`, the CLI below); the
scenes are rendered by :mod:`knet_d2.data.synthetic_scenes` and written in the layout of
:mod:`knet_d2.data.synthetic_coco` (COCO panoptic / instance JSON, panoptic and semantic PNGs,
info.json last).

Image ``i`` of a split depends only on ``(seed, i)``: generating 8 or 2000 images gives the
same first 8 images. A split is written into a temporary directory that is renamed into
place at the end, so an interrupted run never leaves a split that looks complete.

CLI: ``python -m knet_d2.data.synthetic --root datasets --num-train 2000 --num-val 60``
writes ``datasets/knet_synth/{train,val}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

from .synthetic_coco import GENERATOR_VERSION, write_split
from .synthetic_scenes import (
    STUFF_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    THING_CATEGORIES,
    SyntheticSample,
    render_sample,
)

__all__ = [
    "THING_CATEGORIES",
    "STUFF_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_DIRNAME",
    "GENERATOR_VERSION",
    "SyntheticSample",
    "render_sample",
    "generate_synthetic_dataset",
    "is_complete_split",
    "split_default_seed",
    "main",
]

logger = logging.getLogger(__name__)

SYNTHETIC_DIRNAME = "knet_synth"


def split_default_seed(split: str) -> int:
    """The default seed of a split: a stable hash of its name (train and val differ)."""
    return zlib.crc32(split.encode("utf-8")) % (2**31)


def is_complete_split(split_dir: str | Path) -> bool:
    """True when ``split_dir`` holds a finished split (its info.json exists)."""
    return (Path(split_dir) / "info.json").is_file()


def generate_synthetic_dataset(
    root: str | Path,
    split: str,
    num_images: int,
    image_size: int = 128,
    seed: int | None = None,
    overwrite: bool = False,
    keep_if: Callable[[], bool] | None = None,
) -> Path:
    """Write one split of the synthetic dataset to ``<root>/<split>`` and return that path.

    The split is rendered into a hidden temporary directory next to the destination and
    renamed into place when complete. If another process finishes the same split first
    (e.g. two DDP ranks), the existing one is kept and the temporary copy discarded.

    Args:
        root: dataset directory (e.g. ``$DETECTRON2_DATASETS/knet_synth``).
        split: split name, e.g. "train" or "val".
        num_images: number of images (>= 1).
        image_size: image height = width in pixels (>= 64).
        seed: random seed; defaults to a stable hash of ``split``.
        overwrite: replace an existing split instead of raising FileExistsError.
        keep_if: with ``overwrite``, called once the new split is rendered, just before the
            existing one would be replaced: True keeps the existing split (e.g. another
            process regenerated it meanwhile) and discards the new one.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < 64:
        raise ValueError(f"image_size must be >= 64, got {image_size}")
    if not split or os.sep in split or split.startswith("."):
        raise ValueError(f"invalid split name {split!r}")
    seed = split_default_seed(split) if seed is None else int(seed)
    root = Path(root)
    dest = root / split
    if dest.exists() and not overwrite:
        raise FileExistsError(f"synthetic split already exists: {dest} (use overwrite=True)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{split}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        write_split(tmp, num_images, image_size, seed)
        if overwrite and keep_if is not None and is_complete_split(dest) and keep_if():
            logger.info("Synthetic split %s was regenerated concurrently; keeping it.", dest)
            return dest
        if overwrite and dest.exists():
            trash = root / f".{split}.old-{uuid.uuid4().hex[:8]}"
            os.rename(dest, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not is_complete_split(dest):
                raise RuntimeError(
                    f"{dest} exists but is not a complete synthetic split; delete it and retry"
                ) from None
            logger.info("Synthetic split %s was written concurrently; keeping it.", dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("Wrote synthetic split %s: %d images of %dx%d in %.1f s",
                dest, num_images, image_size, image_size, time.perf_counter() - start)
    return dest


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: write ``<root>/knet_synth/{train,val}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="datasets root (DETECTRON2_DATASETS); data goes to ROOT/knet_synth")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=60)
    parser.add_argument("--size", type=int, default=128, help="image height = width")
    parser.add_argument("--seed", type=int, default=None,
                        help="base seed (default: a stable per-split value)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing splits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_root = Path(os.path.expanduser(args.root)) / SYNTHETIC_DIRNAME
    for split, num in (("train", args.num_train), ("val", args.num_val)):
        seed = None if args.seed is None else args.seed + split_default_seed(split)
        start = time.perf_counter()
        path = generate_synthetic_dataset(out_root, split, num, args.size, seed, args.overwrite)
        print(f"{path}: {num} images in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
