"""Register your own data with the metadata K-Net's mappers, evaluators and demo expect.

Call one of these **before** building the trainer/model (e.g. at the top of your script)::

    from knet_d2.data.datasets.register_custom import register_panoptic_dataset
    register_panoptic_dataset("my_pan_train", "my/images", "my/panoptic_png", "my/panoptic.json",
                              sem_seg_root="my/semantic_png")

and use the name in ``DATASETS.TRAIN`` / ``DATASETS.TEST``.

Metadata conventions (Mask2Former style, see docs):

* ``thing_classes`` / ``thing_colors``: thing categories only; their contiguous ids are
  0..T-1 (things first, in dataset-id order), so ``thing_classes[category_id]`` works.
* ``stuff_classes`` / ``stuff_colors``: **all** categories (things then stuff), contiguous
  ids 0..T+S-1, so semantic evaluation/visualisation also covers things.
* ``thing_dataset_id_to_contiguous_id``: things only; ``stuff_dataset_id_to_contiguous_id``:
  all categories.
* ``ignore_label`` = 255, ``label_divisor`` = 1000 for panoptic data.

The ``register_*_dataset`` functions check their inputs at once (directories exist, the JSON
parses and its ``categories`` have what the metadata needs) and raise FileNotFoundError /
ValueError naming the offending path. The ``register_*_from_metadata`` functions are the
lower-level variants: they touch no file at registration time (used for data that is created
later, e.g. the synthetic dataset), and accept a ``prepare`` callable that runs before the
dataset dicts are loaded.

Like D2's ``register_coco_panoptic`` / ``register_coco_instances``, each name is registered once
with a plain loader (:mod:`.coco_json`, D2's ``load_sem_seg``) and its metadata is set next to
it. The loaders check the category ids of every annotation against the categories before
building dicts, so a bad id is reported with the JSON file, the image and the segment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.utils.colormap import colormap

from .coco_json import load_instance_json, load_panoptic_json, read_coco_json

__all__ = [
    "contiguous_id_map",
    "metadata_from_categories",
    "register_panoptic_dataset",
    "register_instance_dataset",
    "register_sem_seg_dataset",
    "register_panoptic_from_metadata",
    "register_instances_from_metadata",
    "register_sem_seg_from_metadata",
]


def _default_color(index: int) -> list[int]:
    palette = colormap(rgb=True, maximum=255)
    return [int(v) for v in palette[index % len(palette)]]


def _ordered_categories(categories: Sequence[dict]) -> list[dict]:
    """Things first, then stuff; each group in dataset-id order."""
    things = sorted((c for c in categories if c.get("isthing", 1)), key=lambda c: c["id"])
    stuff = sorted((c for c in categories if not c.get("isthing", 1)), key=lambda c: c["id"])
    return things + stuff


def contiguous_id_map(categories: Sequence[dict]) -> dict[int, int]:
    """Dataset category id -> contiguous id (things first, then stuff, each by id).

    Args:
        categories: COCO-style category dicts with ``id`` and ``isthing`` (missing = thing).
    """
    return {int(c["id"]): i for i, c in enumerate(_ordered_categories(categories))}


def metadata_from_categories(categories: Sequence[dict]) -> dict:
    """Build the class metadata (names, colours, id maps) for COCO-style categories.

    Args:
        categories: dicts with ``id``, ``name`` and optionally ``isthing`` (default 1) and
            ``color`` ([r, g, b]; a D2 palette colour when missing).

    Returns:
        dict with thing_classes, thing_colors, stuff_classes (all classes), stuff_colors,
        thing_dataset_id_to_contiguous_id (things) and stuff_dataset_id_to_contiguous_id (all).
    """
    ids = [int(c["id"]) for c in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate category ids in {ids}")
    ordered = _ordered_categories(categories)
    colors = [
        list(c["color"]) if "color" in c else _default_color(i) for i, c in enumerate(ordered)
    ]
    things = [i for i, c in enumerate(ordered) if c.get("isthing", 1)]
    return {
        "thing_classes": [ordered[i]["name"] for i in things],
        "thing_colors": [colors[i] for i in things],
        "stuff_classes": [c["name"] for c in ordered],
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {int(ordered[i]["id"]): i for i in things},
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(ordered)},
    }


# ----------------------------------------------------------------------------------------------
# Input checks (at registration)
# ----------------------------------------------------------------------------------------------
def _require_dir(path: str | os.PathLike, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} directory not found: {path}")


def _require_file(path: str | os.PathLike, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")


def _read_categories(json_file: str | os.PathLike, need_isthing: bool) -> list[dict]:
    """The ``categories`` of a COCO-format JSON, each checked for ``id``, ``name`` (and
    ``isthing`` for panoptic data)."""
    cats = read_coco_json(json_file).get("categories")
    if not cats:
        raise ValueError(f"{json_file}: no 'categories' list")
    keys = ("id", "name", "isthing") if need_isthing else ("id", "name")
    for c in cats:
        missing = [k for k in keys if k not in c]
        if missing:
            raise ValueError(f"{json_file}: category {c} lacks {missing}")
    return cats


def _register(
    name: str,
    load: Callable[[], list[dict]],
    prepare: Callable[[], object] | None,
    **metadata,
) -> None:
    """``DatasetCatalog.register(name, prepare -> load)`` and set ``metadata`` on ``name``."""

    def loader() -> list[dict]:
        if prepare is not None:
            prepare()
        return load()

    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


# ----------------------------------------------------------------------------------------------
# Low-level registration (no file access at registration time)
# ----------------------------------------------------------------------------------------------
def register_panoptic_from_metadata(
    name: str,
    metadata: dict,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    panoptic_json: str | os.PathLike,
    sem_seg_root: str | os.PathLike | None = None,
    instances_json: str | os.PathLike | None = None,
    prepare: Callable[[], object] | None = None,
) -> None:
    """Register a COCO-panoptic dataset loaded by :func:`.coco_json.load_panoptic_json`.

    The metadata is what D2's ``register_coco_panoptic`` sets (``evaluator_type``
    ``coco_panoptic_seg``, ``ignore_label`` 255, ``label_divisor`` 1000, the paths). With
    ``sem_seg_root``, every dataset dict also gets ``sem_seg_file_name`` =
    ``sem_seg_root/<panoptic png name>`` and the metadata gets ``sem_seg_root``, so a
    panoptic model can be evaluated with SemSegEvaluator as well.

    Args:
        name: dataset name.
        metadata: class metadata, see :func:`metadata_from_categories`.
        image_root, panoptic_root, panoptic_json: images (``.jpg``), panoptic PNGs, JSON.
        sem_seg_root: optional directory of semantic PNGs named like the panoptic PNGs.
        instances_json: optional COCO instance JSON (stored as ``json_file``).
        prepare: called before loading the dicts (e.g. to create missing data).
    """
    paths = {
        "image_root": str(image_root),
        "panoptic_root": str(panoptic_root),
        "panoptic_json": str(panoptic_json),
        "json_file": None if instances_json is None else str(instances_json),
    }
    if sem_seg_root is not None:
        paths["sem_seg_root"] = str(sem_seg_root)
    _register(
        name,
        partial(
            load_panoptic_json,
            paths["panoptic_json"],
            paths["image_root"],
            paths["panoptic_root"],
            metadata,
            paths.get("sem_seg_root"),
        ),
        prepare,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **paths,
        **metadata,
    )


def register_instances_from_metadata(
    name: str,
    metadata: dict,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    prepare: Callable[[], object] | None = None,
) -> None:
    """Register a COCO instance dataset loaded by :func:`.coco_json.load_instance_json`.

    The metadata is what D2's ``register_coco_instances`` sets (``evaluator_type`` ``coco``).
    ``metadata['thing_classes']`` / ``thing_dataset_id_to_contiguous_id`` must equal what
    D2's ``load_coco_json`` derives (categories sorted by id), or loading raises.
    """
    json_file, image_root = str(json_file), str(image_root)
    _register(
        name,
        partial(load_instance_json, json_file, image_root, name),
        prepare,
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        **metadata,
    )


def register_sem_seg_from_metadata(
    name: str,
    metadata: dict,
    image_root: str | os.PathLike,
    sem_seg_root: str | os.PathLike,
    ignore_label: int = 255,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    prepare: Callable[[], object] | None = None,
) -> None:
    """Register a semantic dataset loaded with D2's ``load_sem_seg``.

    ``metadata`` must contain ``stuff_classes`` (all evaluated classes, index = label value).
    """
    if "stuff_classes" not in metadata:
        raise ValueError(f"metadata for {name!r} needs 'stuff_classes'")
    image_root, sem_seg_root = str(image_root), str(sem_seg_root)
    _register(
        name,
        partial(load_sem_seg, sem_seg_root, image_root, gt_ext=gt_ext, image_ext=image_ext),
        prepare,
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        evaluator_type="sem_seg",
        ignore_label=ignore_label,
        **metadata,
    )


# ----------------------------------------------------------------------------------------------
# User-facing helpers (validate inputs now)
# ----------------------------------------------------------------------------------------------
def register_panoptic_dataset(
    name: str,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    panoptic_json: str | os.PathLike,
    sem_seg_root: str | os.PathLike | None = None,
    instances_json: str | os.PathLike | None = None,
) -> dict:
    """Register a dataset in COCO panoptic format, metadata read from its JSON categories.

    Args:
        name: the new dataset name (must not be registered yet).
        image_root: directory of the RGB images (``<png stem>.jpg``).
        panoptic_root: directory of the panoptic PNGs.
        panoptic_json: COCO panoptic JSON; its ``categories`` need ``id``, ``name``, ``isthing``.
        sem_seg_root: optional semantic PNGs (contiguous ids as in ``stuff_classes``, 255
            unlabeled), e.g. from ``datasets/prepare_coco_semantic_annos_from_panoptic_annos.py``.
        instances_json: optional COCO instance JSON for the same images (enables
            COCOEvaluator on this name).

    Returns:
        The metadata that was set (also available as ``MetadataCatalog.get(name)``).
    """
    _require_dir(image_root, "image")
    _require_dir(panoptic_root, "panoptic PNG")
    if sem_seg_root is not None:
        _require_dir(sem_seg_root, "semantic PNG")
    if instances_json is not None:
        _require_file(instances_json, "instance JSON")
    metadata = metadata_from_categories(_read_categories(panoptic_json, need_isthing=True))
    register_panoptic_from_metadata(
        name, metadata, image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json
    )
    return metadata


def register_instance_dataset(
    name: str, json_file: str | os.PathLike, image_root: str | os.PathLike
) -> dict:
    """Register a COCO instance-segmentation dataset (loaded with D2's ``load_coco_json``).

    The thing metadata is read from the JSON's categories now (the whole JSON is parsed),
    so models and evaluators can use it before the dataset dicts are loaded.

    Returns:
        The metadata that was set.
    """
    _require_dir(image_root, "image")
    cats = _read_categories(json_file, need_isthing=False)
    things = [dict(c, isthing=1) for c in cats]
    full = metadata_from_categories(things)
    metadata = {k: v for k, v in full.items() if k.startswith("thing_")}
    register_instances_from_metadata(name, metadata, json_file, image_root)
    return metadata


def register_sem_seg_dataset(
    name: str,
    image_root: str | os.PathLike,
    sem_seg_root: str | os.PathLike,
    stuff_classes: Sequence[str],
    ignore_label: int = 255,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    stuff_colors: Sequence[Sequence[int]] | None = None,
) -> dict:
    """Register a semantic-segmentation dataset of image / label-PNG pairs.

    Images and labels are matched by their path relative to ``image_root`` /
    ``sem_seg_root`` without extension (D2's ``load_sem_seg``). Label value ``i`` is
    ``stuff_classes[i]``; ``ignore_label`` marks unlabeled pixels.

    Returns:
        The metadata that was set.
    """
    _require_dir(image_root, "image")
    _require_dir(sem_seg_root, "semantic label")
    if next(Path(sem_seg_root).glob(f"*.{gt_ext}"), None) is None:
        raise FileNotFoundError(f"no *.{gt_ext} label files in {sem_seg_root}")
    if not stuff_classes:
        raise ValueError(f"stuff_classes for {name!r} is empty")
    if stuff_colors is None:
        stuff_colors = [_default_color(i) for i in range(len(stuff_classes))]
    if len(stuff_colors) != len(stuff_classes):
        raise ValueError(f"{len(stuff_colors)} stuff_colors for {len(stuff_classes)} classes")
    metadata = {
        "stuff_classes": list(stuff_classes),
        "stuff_colors": [list(c) for c in stuff_colors],
    }
    register_sem_seg_from_metadata(
        name, metadata, image_root, sem_seg_root, ignore_label, image_ext, gt_ext
    )
    return metadata
