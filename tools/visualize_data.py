#!/usr/bin/env python
"""Draw the training data of a K-Net config: raw annotations or augmented ground truth.

Two sources (as in Detectron2's ``tools/visualize_data.py``):

* ``annotation``: the dataset dicts of ``cfg.DATASETS.TRAIN`` as registered, drawn with
  ``Visualizer.draw_dataset_dict`` (instances, panoptic segments or semantic labels);
* ``dataloader``: the same dicts after the training mapper of ``INPUT.DATASET_MAPPER_NAME``
  (``knet_d2.data.dataset_mappers.build_knet_train_mapper``), i.e. after augmentation: the
  ``instances`` targets (``gt_masks`` + ``gt_classes``) as masks labelled with class names, or
  ``sem_seg`` when the sample has no instance targets (semantic datasets).

Every dict is drawn once, in dataset order (the ``dataloader`` source does not shuffle or repeat).

Examples::

    python tools/visualize_data.py --source annotation \
        --config-file configs/synthetic/panoptic/knet_R18_tiny.yaml --output-dir out/vis_ann
    python tools/visualize_data.py --source dataloader --config-file <cfg> \
        --output-dir out/vis_aug --num-images 20 --seed 0 --opts INPUT.CROP.ENABLED True
    python tools/visualize_data.py --source annotation --output-dir out/vis_own \
        --config-file configs/custom/knet_R50_cpu_small.yaml \
        --dataset my_dataset_train=coco_instance:train.json:train_images

Exit status: 0 when every sample was drawn, 1 when some failed, 2 on usage / config errors.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Set, Tuple

import knet_d2  # noqa: F401  (first: hides named third-party warnings; registers)

# isort: split
import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.data.catalog import Metadata
from detectron2.structures import BitMasks, PolygonMasks
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

from knet_d2 import get_knet_cfg
from knet_d2.data.datasets.cli import add_dataset_argument

logger = logging.getLogger("knet_d2.visualize_data")

PROG = "tools/visualize_data.py"
WINDOW_NAME = "K-Net training data"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class UsageError(Exception):
    """A problem with the command line, the config or the datasets it names (exit status 2)."""


def get_parser() -> argparse.ArgumentParser:
    """The tool's command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Visualize K-Net training ground truth (raw or after augmentation).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--source", choices=["annotation", "dataloader"], required=True,
        help="'annotation': raw dataset dicts; 'dataloader': after the training mapper",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="K-Net config")
    parser.add_argument(
        "--output-dir", metavar="DIR",
        help="write one image per sample here (created when missing)",
    )
    parser.add_argument("--show", action="store_true", help="show each image in a window")
    parser.add_argument(
        "--num-images", type=int, default=0, metavar="N",
        help="stop after N samples (0: all samples of cfg.DATASETS.TRAIN)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="drawing scale")
    parser.add_argument(
        "--seed", type=int, default=None,
        help="seed the random augmentations of the 'dataloader' source",
    )
    add_dataset_argument(parser)
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
        help="config overrides, 'KEY VALUE' pairs (must come last)",
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Config as ``train_net.py`` builds it: D2 defaults + DeepLab + K-Net keys, file, opts."""
    if len(args.opts) % 2:
        raise UsageError(f"--opts needs KEY VALUE pairs, got an odd count: {args.opts}")
    try:
        return get_knet_cfg(args.config_file, args.opts, datasets=args.dataset)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except (KeyError, ValueError, AssertionError) as e:
        raise UsageError(f"bad config {args.config_file}: {e}") from None


def train_dataset_names(cfg: CfgNode) -> List[str]:
    """``cfg.DATASETS.TRAIN``, checked to be non-empty and registered.

    Synthetic datasets named there are generated first when missing (as ``train_net.py`` does).
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise UsageError("cfg.DATASETS.TRAIN is empty: no training dataset to draw")
    registered = set(DatasetCatalog.list())
    missing = [n for n in names if n not in registered]
    if missing:
        raise UsageError(
            f"dataset(s) {missing} of cfg.DATASETS.TRAIN are not registered "
            "(register them with --dataset NAME=KIND:... or DATASETS.REGISTER, or fix the config)"
        )
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets

    ensure_synthetic_for_datasets(names)
    return names


def class_name(metadata: Metadata, class_id: int) -> str:
    """Name of a contiguous class id in the K-Net layout (things ``0..T-1``, then stuff).

    ``thing_classes`` names the things; ``stuff_classes`` (all classes in this project's
    datasets) names the rest. Unknown ids are shown as numbers.
    """
    things = metadata.get("thing_classes", None) or []
    if 0 <= class_id < len(things):
        return str(things[class_id])
    stuff = metadata.get("stuff_classes", None) or []
    if 0 <= class_id < len(stuff):
        return str(stuff[class_id])
    return str(class_id)


def class_colors(metadata: Metadata, class_ids: Sequence[int]) -> Optional[List[Tuple]]:
    """Metadata colors (RGB in [0, 1]) for ``class_ids``, or None if any class has none."""
    things = metadata.get("thing_colors", None) or []
    stuff = metadata.get("stuff_colors", None) or []
    colors = []
    for c in class_ids:
        if 0 <= c < len(things):
            rgb = things[c]
        elif 0 <= c < len(stuff):
            rgb = stuff[c]
        else:
            return None
        colors.append(tuple(float(x) / 255.0 for x in rgb))
    return colors


def _semantic_metadata(metadata: Metadata, sem_seg: np.ndarray) -> Metadata:
    """``metadata`` itself when it names the labels, else a stand-in with numeric names
    (``Visualizer.draw_sem_seg`` needs ``stuff_classes``)."""
    if metadata.get("stuff_classes", None):
        return metadata
    valid = sem_seg[sem_seg != 255]
    num = int(valid.max()) + 1 if valid.size else 0
    return Metadata(name=f"{metadata.name}_numbered").set(
        stuff_classes=[class_name(metadata, i) for i in range(num)]
    )


def _masks_for_drawing(gt_masks) -> object:
    """``gt_masks`` in a form ``Visualizer.overlay_instances`` takes."""
    if isinstance(gt_masks, BitMasks):
        return gt_masks.tensor.cpu().numpy()
    if isinstance(gt_masks, PolygonMasks):
        return gt_masks.polygons
    if isinstance(gt_masks, torch.Tensor):
        return gt_masks.cpu().numpy()
    return gt_masks


def draw_raw(dataset_dict: dict, metadata: Metadata, scale: float) -> np.ndarray:
    """RGB picture of one registered dataset dict (its image and annotations)."""
    image = utils.read_image(dataset_dict["file_name"], format="RGB")
    visualizer = Visualizer(image, metadata=metadata, scale=scale)
    return visualizer.draw_dataset_dict(dataset_dict).get_image()


def draw_mapped(
    mapped: dict, metadata: Metadata, image_format: str, scale: float
) -> np.ndarray:
    """RGB picture of one mapper output: the augmented image with its training targets."""
    if "image" not in mapped:
        raise KeyError(f"the mapper output has no 'image' (keys: {sorted(mapped)})")
    image = mapped["image"].permute(1, 2, 0).cpu().numpy()
    image = utils.convert_image_to_rgb(image, image_format)
    visualizer = Visualizer(image, metadata=metadata, scale=scale)
    instances = mapped.get("instances")
    if instances is not None and len(instances) and instances.has("gt_masks"):
        classes = [int(c) for c in instances.gt_classes.tolist()]
        output = visualizer.overlay_instances(
            masks=_masks_for_drawing(instances.gt_masks),
            labels=[class_name(metadata, c) for c in classes],
            assigned_colors=class_colors(metadata, classes),
        )
    elif "sem_seg" in mapped:
        sem_seg = mapped["sem_seg"]
        if isinstance(sem_seg, torch.Tensor):
            sem_seg = sem_seg.cpu().numpy()
        visualizer.metadata = _semantic_metadata(metadata, sem_seg)
        output = visualizer.draw_sem_seg(sem_seg, area_threshold=0, alpha=0.5)
    else:
        output = visualizer.output  # nothing to draw: the augmented image alone
    return output.get_image()


def iter_raw_dicts(names: Sequence[str]) -> Iterator[Tuple[str, dict]]:
    """``(dataset name, dict)`` for every registered dict of the datasets, unfiltered."""
    for name in names:
        for dataset_dict in DatasetCatalog.get(name):
            yield name, dataset_dict


def iter_train_dicts(cfg: CfgNode, names: Sequence[str]) -> Iterator[Tuple[str, dict]]:
    """``(dataset name, dict)`` with the filters of D2's training loader applied."""
    for name in names:
        dicts = get_detection_dataset_dicts(
            [name], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        for dataset_dict in dicts:
            yield name, dataset_dict


def output_path(output_dir: Path, file_name: str, used: Set[str]) -> Path:
    """``output_dir/<image base name>`` (``.png`` added for other formats), made unique."""
    base = Path(file_name).name or "image"
    stem, suffix = os.path.splitext(base)
    if suffix.lower() not in _IMAGE_SUFFIXES:
        stem, suffix = base, ".png"
    name, n = stem + suffix, 1
    while name in used:
        name = f"{stem}_{n}{suffix}"
        n += 1
    used.add(name)
    return output_dir / name


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(args: argparse.Namespace) -> int:
    """Draw the samples; returns the exit status (0 all drawn, 1 some failed)."""
    cfg = setup_cfg(args)
    names = train_dataset_names(cfg)
    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir is not None:
        if output_dir.exists() and not output_dir.is_dir():
            raise UsageError(f"--output-dir {output_dir} exists and is not a directory")
        output_dir.mkdir(parents=True, exist_ok=True)

    if args.source == "dataloader":
        from knet_d2.data.dataset_mappers import build_knet_train_mapper

        if args.seed is not None:
            _seed_everything(args.seed)
        try:
            mapper = build_knet_train_mapper(cfg)
        except KeyError as e:
            raise UsageError(str(e.args[0]) if e.args else str(e)) from None
        samples = iter_train_dicts(cfg, names)
    else:
        mapper = None
        samples = iter_raw_dicts(names)

    used: Set[str] = set()
    drawn = failed = 0
    for dataset_name, dataset_dict in samples:
        if args.num_images > 0 and drawn + failed >= args.num_images:
            break
        metadata = MetadataCatalog.get(dataset_name)
        file_name = str(dataset_dict.get("file_name", f"{dataset_name}_{drawn + failed}"))
        try:
            if mapper is None:
                picture = draw_raw(dataset_dict, metadata, args.scale)
            else:
                picture = draw_mapped(mapper(dataset_dict), metadata, cfg.INPUT.FORMAT,
                                      args.scale)
        except Exception as e:  # one bad sample should not stop the rest
            failed += 1
            logger.error(f"{file_name} (dataset {dataset_name!r}): cannot draw: "
                         f"{type(e).__name__}: {e}")
            continue
        bgr = np.ascontiguousarray(picture[:, :, ::-1])
        if output_dir is not None:
            path = output_path(output_dir, file_name, used)
            if not cv2.imwrite(str(path), bgr):
                failed += 1
                logger.error(f"{path}: could not write the picture of {file_name}")
                continue
        drawn += 1
        if args.show:
            cv2.imshow(WINDOW_NAME, bgr)
            if cv2.waitKey(0) in (27, ord("q")):  # Esc / q: stop
                break
    if args.show:
        cv2.destroyAllWindows()

    where = f" into {output_dir}" if output_dir is not None else ""
    logger.info(f"{args.source}: drew {drawn} sample(s) of {names}{where}"
                + (f"; {failed} failed" if failed else ""))
    if drawn == 0 and failed == 0:
        logger.warning(f"no samples in {names}")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    args = get_parser().parse_args(argv)
    setup_logger(name="knet_d2")
    if not args.output_dir and not args.show:
        print(f"{PROG}: give --output-dir DIR and/or --show", file=sys.stderr)
        return 2
    if args.num_images < 0:
        print(f"{PROG}: --num-images must be >= 0, got {args.num_images}", file=sys.stderr)
        return 2
    if args.scale <= 0:
        print(f"{PROG}: --scale must be > 0, got {args.scale}", file=sys.stderr)
        return 2
    try:
        return run(args)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
