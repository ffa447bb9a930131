"""``python -m knet_onnx``: predictions of an exported knet_d2 model for images or folders.

    python -m knet_onnx photo.jpg more/photos/ --model export/panoptic --output out/

Writes into ``--output`` (only the parts the model produces):

* ``panoptic/NAME.png`` + ``panoptic.json``: COCO panoptic format (PNG ids ``R + 256 G +
  256^2 B``; ``annotations`` with dataset category ids, areas, boxes, scores; ``categories``);
* ``instances.json``: COCO instance results (RLE masks, tight boxes of the masks, scores) and
  ``instances/NAME.npz``: the same as arrays (``masks`` bool, ``scores``, ``category_ids``,
  ``boxes`` XYXY);
* ``sem_seg/NAME.png``: per-pixel contiguous class ids (argmax);
* ``vis/NAME.jpg``: a picture of one output (``--task``).

Existing files are never replaced unless ``--overwrite`` is given. Needs only onnxruntime,
numpy and OpenCV. Exit status: 0, 1 if an input image could not be read or run (the others
are written), 2 for errors before any prediction.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from .drawing import draw_segments, instance_segments, panoptic_segments, semantic_segments
from .formats import id_map_to_rgb, instance_results, panoptic_annotation
from .image_ops import read_image
from .model import KNetOnnxModel
from .spec import SpecError

__all__ = ["IMAGE_EXTENSIONS", "main", "get_parser", "collect_images", "planned_outputs"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class RunnerError(Exception):
    """Printed as one line, exit status 2."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m knet_onnx", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files and/or folders (their images, not recursive)")
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="the export directory (holding model.onnx) or a .onnx file")
    parser.add_argument("--output", required=True, metavar="DIR", help="created if missing")
    parser.add_argument("--task", choices=("panoptic", "instances", "semantic"),
                        help="output drawn in vis/ (default: the first the model produces, "
                        "in the order panoptic, instances, semantic)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="instances drawn in vis/ score at least this (files keep all)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads and post-processing threads "
                             "(0: ONNX Runtime's default and the CPUs available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    return parser


def collect_images(inputs: Sequence[str]) -> List[Path]:
    """Image files of ``inputs`` (files as given, folders' images sorted by name); raises
    :class:`RunnerError` for a missing path, an empty folder or two images with one name."""
    images: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                raise RunnerError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in folder")
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise RunnerError(f"input not found: {path}")
    by_stem: Dict[str, Path] = {}
    for path in images:
        if path.stem in by_stem:
            raise RunnerError(
                f"{by_stem[path.stem]} and {path} would write the same output files "
                f"('{path.stem}'); run them separately"
            )
        by_stem[path.stem] = path
    return images


def planned_outputs(out_dir: Path, tasks: Sequence[str], stems: Sequence[str]) -> List[Path]:
    """Every file a run writes."""
    files = [out_dir / "vis" / f"{s}.jpg" for s in stems]
    if "panoptic" in tasks:
        files += [out_dir / "panoptic.json"] + [out_dir / "panoptic" / f"{s}.png" for s in stems]
    if "instances" in tasks:
        files += [out_dir / "instances.json"]
        files += [out_dir / "instances" / f"{s}.npz" for s in stems]
    if "semantic" in tasks:
        files += [out_dir / "sem_seg" / f"{s}.png" for s in stems]
    return files


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def _save_image_outputs(model: KNetOnnxModel, pred: dict, image: np.ndarray, stem: str,
                        out_dir: Path, task: str, threshold: float, records: dict) -> str:
    """Write one image's files; returns the summary line."""
    classes = model.spec.classes
    notes = []
    if "panoptic_seg" in pred:
        ids, info = pred["panoptic_seg"]
        _write_png(out_dir / "panoptic" / f"{stem}.png", id_map_to_rgb(ids)[:, :, ::-1])
        records["panoptic"].append(panoptic_annotation(ids, info, classes, stem, f"{stem}.png"))
        notes.append(f"{len(info)} panoptic segments ({sum(s['isthing'] for s in info)} things)")
    if "instances" in pred:
        inst = pred["instances"]
        records["instances"].extend(instance_results(inst, classes, stem))
        category_ids = np.array([classes[int(c)]["dataset_id"] for c in inst["pred_classes"]],
                                dtype=np.int64)
        np.savez_compressed(out_dir / "instances" / f"{stem}.npz", masks=inst["pred_masks"],
                            scores=inst["scores"], category_ids=category_ids,
                            boxes=inst["pred_boxes"])
        notes.append(f"{len(inst['scores'])} instances")
    if "sem_seg" in pred:
        labels = pred["sem_seg"].argmax(axis=0)
        dtype = np.uint8 if len(classes) <= 256 else np.uint16
        _write_png(out_dir / "sem_seg" / f"{stem}.png", labels.astype(dtype))
    if task == "panoptic":
        segments = panoptic_segments(*pred["panoptic_seg"], classes)
    elif task == "instances":
        segments = instance_segments(pred["instances"], classes, threshold)
        scores = pred["instances"]["scores"]
        if not segments:
            best = float(scores.max()) if scores.size else 0.0
            notes.append(f"none scores >= {threshold:g} (best {best:.3f}): try "
                         f"--confidence-threshold {np.floor(best * 100) / 100:g}")
        else:
            notes.append(f"{len(segments)} drawn (score >= {threshold:g})")
    else:
        segments = semantic_segments(pred["sem_seg"].argmax(axis=0), classes)
    _write_png(out_dir / "vis" / f"{stem}.jpg", draw_segments(image, segments))
    return f"{stem}: {', '.join(notes) or f'{len(segments)} classes'}"


def run(args: argparse.Namespace) -> int:
    options = ort.SessionOptions()
    if args.threads > 0:
        options.intra_op_num_threads = args.threads
    try:
        model = KNetOnnxModel.load(args.model, session_options=options,
                                   threads=args.threads if args.threads > 0 else None)
    except (FileNotFoundError, SpecError) as e:
        raise RunnerError(str(e)) from None
    tasks = model.spec.tasks
    task = args.task or tasks[0]
    if task not in tasks:
        raise RunnerError(f"--task {task}: the model produces only {', '.join(tasks)}")
    images = collect_images(args.inputs)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunnerError(f"--output {out_dir} exists and is not a directory")
    planned = planned_outputs(out_dir, tasks, [p.stem for p in images])
    existing = [str(p) for p in planned if p.exists()]
    if existing and not args.overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise RunnerError(f"refusing to overwrite {', '.join(existing[:3])}{more} "
                          "(pass --overwrite or another --output)")
    for folder in {p.parent for p in planned}:
        folder.mkdir(parents=True, exist_ok=True)
    records: dict = {"panoptic": [], "instances": []}
    failed = 0
    for path in images:
        try:
            image = read_image(path)
            pred = model.predict(image)  # ValueError: a static graph and another image size
        except (OSError, ValueError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(_save_image_outputs(model, pred, image, path.stem, out_dir, task,
                                  args.confidence_threshold, records))
    classes = model.spec.classes
    if "panoptic" in tasks:
        categories = [{"id": c["dataset_id"], "name": c["name"], "isthing": int(c["isthing"]),
                       "color": c["color"]} for c in classes]
        (out_dir / "panoptic.json").write_text(json.dumps(
            {"annotations": records["panoptic"], "categories": categories}))
    if "instances" in tasks:
        (out_dir / "instances.json").write_text(json.dumps(records["instances"]))
    print(f"wrote {len(images) - failed} image(s) to {out_dir}"
          + (f"; {failed} could not be read" if failed else ""))
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
