"""Register the synthetic datasets (see :mod:`knet_d2.data.synthetic`).

Names (root = ``$DETECTRON2_DATASETS/knet_synth``, default ``datasets/knet_synth``):

=============================== ================================ ========================
name                            ground truth in the dicts        evaluator_type
=============================== ================================ ========================
knet_synth_panoptic_{train,val} pan_seg_file_name, segments_info, coco_panoptic_seg
                                sem_seg_file_name
knet_synth_instance_{train,val} annotations (polygons / RLE)      coco
knet_synth_sem_seg_{train,val}  sem_seg_file_name                sem_seg
=============================== ================================ ========================

``knet_synth_{panoptic,instance,sem_seg}_train16k`` name a larger training split (16 000
images, in ``root/train16k``, about 2 minutes and 390 MB): the train split's seed, so its first
2000 images are the train split's, with 8x as many after them. The committed configs train on
``train``; benchmarks/RESULTS.md shows what the larger split changes.

Importing registers the names only; nothing is generated. A split is generated (train 2000,
val 60 images of 128x128, about 40 s) the first time ``DatasetCatalog.get`` loads one of
its names, or when :func:`ensure_synthetic_dataset` / :func:`ensure_synthetic_for_datasets`
is called — do that up front before building evaluators that read the JSON files at
construction (COCOEvaluator reads ``json_file``, COCOPanopticEvaluator ``panoptic_json``).
Concurrent callers (DDP ranks) are safe: each split is renamed into place atomically and
re-checked.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..synthetic import (
    GENERATOR_VERSION,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_DIRNAME,
    generate_synthetic_dataset,
    is_complete_split,
    split_default_seed,
)
from .register_custom import (
    metadata_from_categories,
    register_instances_from_metadata,
    register_panoptic_from_metadata,
    register_sem_seg_from_metadata,
)

__all__ = [
    "DEFAULT_SPLIT_SIZES",
    "LARGE_TRAIN_SPLIT",
    "DEFAULT_IMAGE_SIZE",
    "register_synthetic_datasets",
    "ensure_synthetic_dataset",
    "ensure_synthetic_for_datasets",
    "synthetic_split_paths",
]

logger = logging.getLogger(__name__)

# 2000 training images: with 500 the instance model overfitted (a much higher mask AP on its
# training split than on val).
DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 2000, "val": 60}
#: (split, images): 8x the train split, rendered with its seed (a superset of it)
LARGE_TRAIN_SPLIT: tuple[str, int] = ("train16k", 16000)
DEFAULT_IMAGE_SIZE = 128


@dataclass(frozen=True)
class _SplitSpec:
    root: Path
    split: str
    num_images: int
    image_size: int
    seed: int | None = None  # None: the default seed of the split's name

    @property
    def split_dir(self) -> Path:
        return self.root / self.split

    @property
    def generator_seed(self) -> int:
        return split_default_seed(self.split) if self.seed is None else self.seed

    def stale_reason(self) -> str | None:
        """Why the complete split on disk differs from this spec (None when it matches)."""
        try:
            info = json.loads((self.split_dir / "info.json").read_text())
        except (OSError, ValueError) as e:
            return f"unreadable info.json ({e})"
        found = (info.get("num_images"), info.get("image_size"), info.get("version"),
                 info.get("seed"))
        wanted = (self.num_images, self.image_size, GENERATOR_VERSION, self.generator_seed)
        if found == wanted:
            return None
        return (
            "it has {} images of {} px from generator version {} with seed {}, this version of "
            "knet_d2 uses {} images of {} px from version {} with seed {}".format(*found, *wanted)
        )

    def ensure(self) -> Path:
        """Generate the split unless a complete, matching one exists; safe under concurrency.

        A complete split written with other settings (e.g. by an older knet_d2 whose train
        split was smaller) is regenerated in place, with a warning: it is generated data
        that the package itself rebuilds deterministically.
        """
        if is_complete_split(self.split_dir):
            reason = self.stale_reason()
            if reason is not None:
                logger.warning("Regenerating synthetic split %s: %s.", self.split_dir, reason)
                generate_synthetic_dataset(
                    self.root, self.split, self.num_images, self.image_size,
                    seed=self.generator_seed, overwrite=True,
                    keep_if=lambda: self.stale_reason() is None,
                )
        else:
            logger.info(
                "Generating synthetic split %s (%d images of %d px) ...",
                self.split_dir, self.num_images, self.image_size,
            )
            try:
                generate_synthetic_dataset(
                    self.root, self.split, self.num_images, self.image_size,
                    seed=self.generator_seed,
                )
            except FileExistsError:
                if not is_complete_split(self.split_dir):
                    raise RuntimeError(
                        f"{self.split_dir} exists but is not a complete synthetic split "
                        "(no info.json); delete it to regenerate"
                    ) from None
        return self.split_dir


#: dataset name -> the split it reads (for ensure_synthetic_for_datasets)
_REGISTERED: dict[str, _SplitSpec] = {}
_DEFAULT_ROOT: Path | None = None


def synthetic_split_paths(split_dir: str | os.PathLike) -> dict[str, str]:
    """The file layout of one synthetic split (see :mod:`knet_d2.data.synthetic`)."""
    d = Path(split_dir)
    return {
        "image_root": str(d / "images"),
        "panoptic_root": str(d / "panoptic"),
        "panoptic_json": str(d / "panoptic.json"),
        "instances_json": str(d / "instances.json"),
        "sem_seg_root": str(d / "semantic"),
    }


def register_synthetic_datasets(
    root: str | os.PathLike,
    split_sizes: dict[str, int] | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    prefix: str = "knet_synth",
    seeds: dict[str, int] | None = None,
) -> list[str]:
    """Register ``{prefix}_{panoptic,instance,sem_seg}_{split}`` for each split.

    Args:
        root: synthetic dataset directory; split ``s`` lives in ``root/s``.
        split_sizes: split name -> number of images generated when missing
            (default :data:`DEFAULT_SPLIT_SIZES`).
        image_size: image height = width used when generating.
        prefix: name prefix (tests register small copies under other prefixes).
        seeds: split name -> generator seed, for splits that should not use their own
            name's default seed (e.g. a larger copy of ``train``); a split on disk generated
            with another seed is regenerated.

    Returns:
        The registered dataset names.
    """
    root = Path(os.path.expanduser(str(root)))
    split_sizes = dict(DEFAULT_SPLIT_SIZES if split_sizes is None else split_sizes)
    seeds = dict(seeds or {})
    unknown = sorted(set(seeds) - set(split_sizes))
    if unknown:
        raise ValueError(f"seeds given for splits that are not registered: {unknown}")
    meta = metadata_from_categories(SYNTHETIC_CATEGORIES)
    # register_coco_panoptic itself adds ignore_label=255 and label_divisor=1000.
    ins_meta = dict(meta, ignore_label=255, label_divisor=1000)
    sem_meta = dict(meta, label_divisor=1000)  # ignore_label: the sem-seg helper's default
    names = []
    for split, num in split_sizes.items():
        seed = int(seeds[split]) if split in seeds else None
        spec = _SplitSpec(root, split, int(num), int(image_size), seed)
        p = synthetic_split_paths(spec.split_dir)

        pan = f"{prefix}_panoptic_{split}"
        register_panoptic_from_metadata(
            pan, meta, p["image_root"], p["panoptic_root"], p["panoptic_json"],
            sem_seg_root=p["sem_seg_root"], instances_json=p["instances_json"],
            prepare=spec.ensure,
        )

        ins = f"{prefix}_instance_{split}"
        register_instances_from_metadata(
            ins, ins_meta, p["instances_json"], p["image_root"], prepare=spec.ensure
        )

        sem = f"{prefix}_sem_seg_{split}"
        register_sem_seg_from_metadata(
            sem, sem_meta, p["image_root"], p["sem_seg_root"], prepare=spec.ensure
        )
        for name in (pan, ins, sem):
            _REGISTERED[name] = spec
        names += [pan, ins, sem]
    return names


def ensure_synthetic_dataset(
    root: str | os.PathLike | None = None, splits: Iterable[str] | None = None
) -> Path:
    """Generate the missing synthetic splits now; returns the synthetic dataset root.

    Args:
        root: defaults to the root of the ``knet_synth_*`` names registered at import.
        splits: defaults to all of :data:`DEFAULT_SPLIT_SIZES`; the larger training split
            (:data:`LARGE_TRAIN_SPLIT`) only when named.
    """
    root = Path(os.path.expanduser(str(root))) if root is not None else _DEFAULT_ROOT
    assert root is not None
    for split in DEFAULT_SPLIT_SIZES if splits is None else splits:
        spec = _default_spec(root, split)
        if spec is None:
            known = [*DEFAULT_SPLIT_SIZES, LARGE_TRAIN_SPLIT[0]]
            raise ValueError(f"unknown synthetic split {split!r}; known: {known}")
        spec.ensure()
    return root


def _default_spec(root: Path, split: str) -> _SplitSpec | None:
    """The spec of a split that is registered at import (None for other names)."""
    if split in DEFAULT_SPLIT_SIZES:
        return _SplitSpec(root, split, DEFAULT_SPLIT_SIZES[split], DEFAULT_IMAGE_SIZE)
    if split == LARGE_TRAIN_SPLIT[0]:
        return _SplitSpec(root, split, LARGE_TRAIN_SPLIT[1], DEFAULT_IMAGE_SIZE,
                          split_default_seed("train"))
    return None


def ensure_synthetic_for_datasets(dataset_names: Iterable[str]) -> list[str]:
    """Generate the data behind any synthetic names among ``dataset_names``.

    Non-synthetic names are ignored, so a training script can simply pass
    ``cfg.DATASETS.TRAIN + cfg.DATASETS.TEST``.

    Returns:
        The synthetic names that were checked / prepared.
    """
    done = []
    for name in dataset_names:
        spec = _REGISTERED.get(name)
        if spec is not None:
            spec.ensure()
            done.append(name)
    return done


def _register_default() -> None:
    global _DEFAULT_ROOT
    _DEFAULT_ROOT = Path(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    ) / SYNTHETIC_DIRNAME
    register_synthetic_datasets(_DEFAULT_ROOT)
    large = _default_spec(_DEFAULT_ROOT, LARGE_TRAIN_SPLIT[0])
    register_synthetic_datasets(
        _DEFAULT_ROOT, {large.split: large.num_images}, seeds={large.split: large.seed}
    )


_register_default()
