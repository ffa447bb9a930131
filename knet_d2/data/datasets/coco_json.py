"""Load COCO-format JSON files (panoptic or instance) into D2 dataset dicts, checked.

The loaders registered by :mod:`.register_custom`. Each reads its JSON once, checks what the
dicts need before building them (every ``category_id`` is a known category, the first image and
PNG exist) and raises ``FileNotFoundError`` / ``ValueError`` naming the JSON file, the image and
the problem, where D2's loaders raise a bare ``KeyError: 99`` or ``AssertionError: <path>``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable

from detectron2.data.datasets import load_coco_json
from detectron2.utils.file_io import PathManager

__all__ = ["read_coco_json", "load_panoptic_json", "load_instance_json"]

logger = logging.getLogger(__name__)


def read_coco_json(json_file: str | os.PathLike, what: str = "annotation JSON") -> dict:
    """Parse a COCO-format JSON file (a dict), naming the file when it is missing or invalid."""
    if not PathManager.isfile(str(json_file)):
        raise FileNotFoundError(f"{what} file not found: {json_file}")
    try:
        with PathManager.open(str(json_file)) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{json_file}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_category_ids(
    json_file: str | os.PathLike,
    data: dict,
    valid_ids: Collection[int],
    panoptic: bool,
) -> None:
    """Raise ValueError at the first annotation (segment) whose ``category_id`` is unknown."""
    valid = {int(i) for i in valid_ids}
    images = {img.get("id"): img.get("file_name") for img in data.get("images", [])}
    for ann in data.get("annotations", []):
        items: Iterable[dict] = ann.get("segments_info", []) if panoptic else [ann]
        for item in items:
            cat = item.get("category_id")
            if cat in valid:
                continue
            image_id = ann.get("image_id")
            image = images.get(image_id, ann.get("file_name"))
            what = "segment" if panoptic else "annotation"
            shown = sorted(valid)
            raise ValueError(
                f"{json_file}: image_id {image_id} ({image}): {what} {item.get('id')} has "
                f"category_id {cat}, which is not one of the {len(valid)} ids in 'categories' "
                f"({shown[:10]}{' ...' if len(shown) > 10 else ''})"
            )


def _require_first_file(json_file: str | os.PathLike, path: str) -> None:
    if not PathManager.isfile(path):
        raise FileNotFoundError(
            f"{json_file}: file of its first annotation not found: {path} (check the "
            "image / panoptic PNG directories given at registration)"
        )


def load_panoptic_json(
    panoptic_json: str | os.PathLike,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    metadata: dict,
    sem_seg_root: str | os.PathLike | None = None,
) -> list[dict]:
    """COCO panoptic JSON -> D2 dicts, as D2's ``load_coco_panoptic_json`` returns them.

    Each dict has ``file_name`` (``image_root/<png stem>.jpg``), ``image_id``,
    ``pan_seg_file_name`` (``panoptic_root/<png>``) and ``segments_info`` whose
    ``category_id`` is contiguous (things by ``thing_dataset_id_to_contiguous_id``, the rest by
    ``stuff_dataset_id_to_contiguous_id``) with ``isthing`` set. With ``sem_seg_root``, also
    ``sem_seg_file_name`` = ``sem_seg_root/<png>``.

    Args:
        panoptic_json: the COCO panoptic JSON.
        image_root, panoptic_root: directories of the images and of the panoptic PNGs.
        metadata: class metadata with both ``*_dataset_id_to_contiguous_id`` maps.
        sem_seg_root: optional directory of semantic PNGs named like the panoptic PNGs.

    Raises:
        ValueError: a segment's ``category_id`` is in neither id map, or no annotations.
        FileNotFoundError: the first image or panoptic PNG is missing.
    """
    data = read_coco_json(panoptic_json, "panoptic JSON")
    thing_ids = metadata["thing_dataset_id_to_contiguous_id"]
    stuff_ids = metadata["stuff_dataset_id_to_contiguous_id"]
    _check_category_ids(panoptic_json, data, set(thing_ids) | set(stuff_ids), panoptic=True)
    dicts = []
    for ann in data.get("annotations", []):
        segments = []
        for seg in ann["segments_info"]:
            isthing = seg["category_id"] in thing_ids
            contiguous = (thing_ids if isthing else stuff_ids)[seg["category_id"]]
            segments.append(dict(seg, category_id=contiguous, isthing=isthing))
        record = {
            "file_name": os.path.join(
                str(image_root), os.path.splitext(ann["file_name"])[0] + ".jpg"
            ),
            "image_id": int(ann["image_id"]),
            "pan_seg_file_name": os.path.join(str(panoptic_root), ann["file_name"]),
            "segments_info": segments,
        }
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = os.path.join(str(sem_seg_root), ann["file_name"])
        dicts.append(record)
    if not dicts:
        raise ValueError(f"{panoptic_json}: no annotations to load (images in {image_root})")
    _require_first_file(panoptic_json, dicts[0]["file_name"])
    _require_first_file(panoptic_json, dicts[0]["pan_seg_file_name"])
    if sem_seg_root is not None and not PathManager.isfile(dicts[0]["sem_seg_file_name"]):
        # only semantic evaluation reads them: warn, panoptic training still works
        logger.warning(
            f"{panoptic_json}: semantic PNG not found: {dicts[0]['sem_seg_file_name']}; "
            "SemSegEvaluator will fail (make them with datasets/prepare_*: "
            "prepare_coco_semantic_annos_from_panoptic_annos.py for COCO, "
            "prepare_ade20k_sem_seg.py for ADE20K; see datasets/README.md)"
        )
    return dicts


def load_instance_json(
    json_file: str | os.PathLike, image_root: str | os.PathLike, dataset_name: str
) -> list[dict]:
    """COCO instance JSON -> D2 dicts through D2's ``load_coco_json`` (which also sets the
    thing metadata of ``dataset_name``), after checking every ``category_id``.

    Raises:
        ValueError: an annotation's ``category_id`` is not in the JSON's ``categories``.
    """
    data = read_coco_json(json_file, "instance JSON")
    ids = [c.get("id") for c in data.get("categories") or []]
    _check_category_ids(json_file, data, ids, panoptic=False)
    # D2 parses the file itself (pycocotools); the check above is what it cannot name.
    return load_coco_json(str(json_file), str(image_root), dataset_name)
