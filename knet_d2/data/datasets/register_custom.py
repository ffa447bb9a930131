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

The ``register_*_dataset`` functions check their inputs at once and raise
FileNotFoundError / ValueError naming the offending path. The ``register_*_from_metadata``
functions are the lower-level variants: they touch no file at registration time (used for
data that is created later, e.g. the synthetic dataset), and accept a ``prepare`` callable
that runs before the dataset dicts are loaded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg, register_coco_instances, register_coco_panoptic
from detectron2.utils.colormap import colormap

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

logger = logging.getLogger(__name__)

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
# Input checks
# ----------------------------------------------------------------------------------------------
def _require_dir(path: str | os.PathLike, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} directory not found: {path}")


def _require_file(path: str | os.PathLike, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")


def _read_categories(json_file: str | os.PathLike, need_isthing: bool) -> list[dict]:
    _require_file(json_file, "annotation JSON")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file}: not valid JSON ({e})") from e
    cats = data.get("categories") if isinstance(data, dict) else None
    if not cats:
        raise ValueError(f"{json_file}: no 'categories' list")
    keys = ("id", "name", "isthing") if need_isthing else ("id", "name")
    for c in cats:
        missing = [k for k in keys if k not in c]
        if missing:
            raise ValueError(f"{json_file}: category {c} lacks {missing}")
    return cats


def _wrap_loader(
    name: str,
    prepare: Callable[[], object] | None,
    post: Callable[[list[dict]], list[dict]] | None = None,
    diagnose: Callable[[Exception], None] | None = None,
) -> None:
    """Replace the loader D2's helper registered for ``name`` with prepare -> load -> post.

    ``diagnose(error)`` runs when D2's loader raises ``KeyError`` / ``AssertionError`` (its
    bare ``KeyError: 999`` or ``AssertionError: <path>``); it raises a clearer error or returns
    to let the original one propagate.
    """
    load = DatasetCatalog[name]
    if prepare is None and post is None and diagnose is None:
        return

    def loader() -> list[dict]:
        if prepare is not None:
            prepare()
        try:
            dicts = load()
        except (KeyError, AssertionError) as e:
            if diagnose is not None:
                diagnose(e)
            raise
        return post(dicts) if post is not None else dicts

    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, loader)


def _diagnose_coco_load(
    json_file: str, valid_ids: Sequence[int], panoptic: bool, error: Exception
) -> None:
    """Turn D2 loader failures into errors naming the JSON, the image and the problem.

    Runs only after D2's ``load_coco_json`` / ``load_coco_panoptic_json`` failed: re-reads the
    JSON to find the first annotation whose ``category_id`` is not a listed category, and
    explains D2's first-file existence assertions.
    """
    if isinstance(error, AssertionError) and error.args:
        path = str(error.args[0])
        if path.startswith("No images found"):
            raise ValueError(f"{json_file}: no annotations to load ({path})") from error
        if os.path.isabs(path) or os.sep in path:
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{json_file}: file of its first annotation not found: {path} (check the "
                    "image / panoptic PNG directories given at registration)"
                ) from error
        return
    valid = {int(i) for i in valid_ids}
    with open(json_file) as f:
        data = json.load(f)
    images = {img.get("id"): img.get("file_name") for img in data.get("images", [])}
    for ann in data.get("annotations", []):
        image_id = ann.get("image_id")
        where = f"{json_file}: image_id {image_id} ({images.get(image_id, ann.get('file_name'))})"
        items = ann.get("segments_info", []) if panoptic else [ann]
        for item in items:
            cat = item.get("category_id")
            if cat not in valid:
                what = f"segment {item.get('id')}" if panoptic else f"annotation {item.get('id')}"
                raise ValueError(
                    f"{where}: {what} has category_id {cat}, which is not one of the "
                    f"{len(valid)} ids in the JSON's 'categories' ({sorted(valid)[:10]}"
                    f"{' ...' if len(valid) > 10 else ''})"
                ) from error


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
    """Register a COCO-panoptic dataset through D2's ``register_coco_panoptic``.

    With ``sem_seg_root``, every dataset dict also gets ``sem_seg_file_name`` =
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
    register_coco_panoptic(
        name,
        metadata,
        str(image_root),
        str(panoptic_root),
        str(panoptic_json),
        None if instances_json is None else str(instances_json),
    )
    post = None
    if sem_seg_root is not None:
        sem_root = str(sem_seg_root)
        MetadataCatalog.get(name).set(sem_seg_root=sem_root)

        def post(dicts: list[dict]) -> list[dict]:
            for d in dicts:
                d["sem_seg_file_name"] = os.path.join(
                    sem_root, os.path.basename(d["pan_seg_file_name"])
                )
            if dicts and not os.path.isfile(dicts[0]["sem_seg_file_name"]):
                # only semantic evaluation reads them: warn, panoptic training still works
                logger.warning(
                    f"{name}: semantic PNG not found: {dicts[0]['sem_seg_file_name']}; "
                    "SemSegEvaluator will fail (make them with datasets/prepare_*: "
                    "prepare_coco_semantic_annos_from_panoptic_annos.py for COCO, "
                    "prepare_ade20k_sem_seg.py for ADE20K; see datasets/README.md)"
                )
            return dicts

    all_ids = list(metadata["stuff_dataset_id_to_contiguous_id"]) + list(
        metadata["thing_dataset_id_to_contiguous_id"]
    )
    json_str = str(panoptic_json)
    _wrap_loader(
        name, prepare, post, lambda e: _diagnose_coco_load(json_str, all_ids, True, e)
    )


def register_instances_from_metadata(
    name: str,
    metadata: dict,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    prepare: Callable[[], object] | None = None,
) -> None:
    """Register a COCO instance dataset through D2's ``register_coco_instances``.

    ``metadata['thing_classes']`` / ``thing_dataset_id_to_contiguous_id`` must equal what
    D2's ``load_coco_json`` derives (categories sorted by id), or loading raises.
    """
    register_coco_instances(name, metadata, str(json_file), str(image_root))
    json_str = str(json_file)

    def diagnose(e: Exception) -> None:
        if isinstance(e, KeyError) and "category_id" in str(e):
            with open(json_str) as f:
                ids = [int(c["id"]) for c in json.load(f).get("categories", [])]
            _diagnose_coco_load(json_str, ids, False, e)

    _wrap_loader(name, prepare, diagnose=diagnose)


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

    def loader() -> list[dict]:
        if prepare is not None:
            prepare()
        return load_sem_seg(sem_seg_root, image_root, gt_ext=gt_ext, image_ext=image_ext)

    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
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
    """Register a COCO instance-segmentation dataset (wraps D2's ``register_coco_instances``).

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
