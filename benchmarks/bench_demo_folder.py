#!/usr/bin/env python
"""Throughput of the demo on a folder of images, before and after batching: what
``demo/demo.py --input folder/ --output out/`` runs (``knet_d2.rendering.run_on_images``: read,
predict, draw and write every image), once as today (batch 1, fp32) and once with
``--batch-size`` (and optionally ``--precision`` / ``--compile``), on real coco_tiny images.

The model: K-Net R50 (``--model``, this project's COCO config) through ``knet_d2.Predictor``
with random weights, as ``demo/demo.py --allow-random-weights`` builds it (``MODEL.WEIGHTS ""``,
``strict=False``), FrozenBN statistics calibrated on the first image (``benchmarks.models``) so
that activations are finite. Both predictors hold the same weights. Random weights score low,
so fewer segments are drawn than with a trained model: the drawing share of the time is a lower
bound of a real run's.

Batches: ``knet_d2.Predictor`` batches only consecutive images that the model pads to the same
size (batched results then equal per-image results), so on a folder of mixed sizes fewer and
smaller batches form than ``--batch-size`` asks for; the table reports the model calls and the
batch sizes that actually formed (counted by a forward pre-hook on the model). The first
coco_tiny images pad to several sizes (mostly batches of one); ``--uniform-size`` takes only the
640x480 images, a folder from one camera, where every batch fills up.

Usage::

    python -m benchmarks.bench_demo_folder --threads 2 --num-images 8 --batch-size 4 --iters 1
    python -m benchmarks.bench_demo_folder --threads 2 --num-images 8 --batch-size 4 \
        --uniform-size --precision bf16

Timing: the two configurations take turns run by run (``--iters`` runs each over the whole
folder, after one untimed run over the first ``--warmup`` images, over all of them with
``--compile``); images/s is images / wall
time of ``run_on_images``, drawing and writing included. Drawings go to a temporary folder
(deleted afterwards) unless ``--output-dir`` (a new folder) is given.
"""
from __future__ import annotations

import argparse
import collections
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .bench_lock import run_locked
from .cli import add_common_args, environment, refuse_existing, run_header, setup_run, write_json
from .data import coco_tiny_inputs, inputs_for
from .models import MODEL_NAMES, calibrate_frozen_bn, knet_cfg
from .report import format_table

MODELS = ("knet_panoptic", "knet_instance")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--model", default="knet_panoptic", choices=MODELS)
    p.add_argument("--num-images", type=int, default=8, help="coco_tiny val images (sorted)")
    p.add_argument("--batch-size", type=int, default=4, help="the 'after' configuration's")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="the 'after' configuration's TEST.PRECISION")
    p.add_argument("--compile", action="store_true",
                   help="the 'after' configuration with TEST.COMPILE")
    p.add_argument("--uniform-size", action="store_true",
                   help="only coco_tiny images of the most common size (640x480): the folder "
                        "of one camera, where every batch fills up")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="keep the drawings in this new folder (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    refuse_existing(p, args, "json")
    if args.output_dir is not None and args.output_dir.exists():
        p.error(f"--output-dir {args.output_dir} already exists; pass a new folder")
    if min(args.num_images, args.iters, args.batch_size) < 1 or args.warmup < 0:
        p.error("--num-images, --iters and --batch-size must be >= 1, --warmup >= 0")
    if args.amp not in (None, ["none"]):
        p.error("use --precision (the demo's option) instead of --amp")
    return args


class BatchCounter:
    """Counts the model calls and the number of images of each (a forward pre-hook)."""

    def __init__(self, model: torch.nn.Module):
        self.sizes: List[int] = []
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, inputs) -> None:
        self.sizes.append(len(inputs[0]))

    def remove(self) -> None:
        self._handle.remove()


def folder_images(data_root: Path, num_images: int, uniform_size: bool) -> List[Path]:
    """The first ``num_images`` coco_tiny val2017 files (sorted by name); with ``uniform_size``
    only files of the most common (width, height) (PIL's header size)."""
    from PIL import Image

    folder = data_root / "coco_tiny" / "val2017"
    files = sorted(folder.glob("*.jpg"))
    if uniform_size:
        sizes = {f: Image.open(f).size for f in files}
        common = collections.Counter(sizes.values()).most_common(1)[0][0]
        files = [f for f in files if sizes[f] == common]
    if len(files) < num_images:
        raise SystemExit(f"{folder}: only {len(files)} images"
                         f"{' of the most common size' if uniform_size else ''}, "
                         f"--num-images {num_images}")
    return files[:num_images]


def build_predictor(args, batch_size: int, precision: str, compile: bool):
    """``knet_d2.Predictor`` with random weights, as ``demo.py --allow-random-weights``."""
    from knet_d2 import Predictor

    cfg = knet_cfg(args.model, args.device, [
        "INPUT.MIN_SIZE_TEST", str(args.min_size), "INPUT.MAX_SIZE_TEST", str(args.max_size),
    ])
    torch.manual_seed(args.seed)
    return Predictor(cfg, weights="", strict=False, batch_size=batch_size,
                     precision=precision, compile=compile)


def run(args, argv: Sequence[str], print_fn: Callable[[str], None] = print) -> List[dict]:
    """Build both predictors, warm up, then time the two folder runs taking turns."""
    from knet_d2.rendering import ImageRenderer, dataset_metadata, run_on_images

    device = setup_run(args)
    header = run_header(argv, __spec__.name, args.device, args.threads)
    for line in environment(header):
        print_fn(line)
    files = folder_images(args.data_root, args.num_images, args.uniform_size)
    images = coco_tiny_inputs(args.data_root, 1, args.min_size, args.max_size)  # calibration
    configs = {
        "before: batch 1, fp32": (1, "fp32", False),
        f"after: batch {args.batch_size}, {args.precision}"
        + (", compile" if args.compile else ""): (args.batch_size, args.precision, args.compile),
    }
    renderers = {}
    for label, (bs, precision, compile) in configs.items():
        predictor = build_predictor(args, bs, precision, compile)
        if renderers:  # the same weights as the first predictor
            first = next(iter(renderers.values())).predictor
            predictor.model.load_state_dict(first.model.state_dict())
        else:
            calibrate_frozen_bn(predictor.model, inputs_for(args.model, images[:1], device))
        renderers[label] = ImageRenderer(predictor, dataset_metadata(predictor.cfg),
                                         batch_size=bs)
    out_root = args.output_dir or Path(tempfile.mkdtemp(prefix="bench_demo_folder_"))
    # no per-image lines nor random-weight hints ("no thing segment drawn"), for this run only
    rendering_log = logging.getLogger("knet_d2.rendering")
    level = rendering_log.level
    rendering_log.setLevel(logging.ERROR)
    try:
        seconds: Dict[str, float] = collections.defaultdict(float)
        batches: Dict[str, List[int]] = {label: [] for label in renderers}
        for n, (label, (_, _, compile)) in enumerate(configs.items()):
            warm_files = files if compile else files[:args.warmup]  # compile: every shape
            if warm_files:
                warm = out_root / f"warmup_{n}"
                warm.mkdir(parents=True)
                run_on_images(renderers[label], warm_files, [warm / f.name for f in warm_files],
                              progress=False)
        for it in range(args.iters):
            for n, (label, renderer) in enumerate(renderers.items()):
                out = out_root / f"config{n}_iter{it}"
                out.mkdir(parents=True)
                counter = BatchCounter(renderer.predictor.model)
                start = time.perf_counter()
                summary = run_on_images(renderer, files, [out / f.name for f in files],
                                        progress=False)
                seconds[label] += time.perf_counter() - start
                counter.remove()
                if summary.failed:
                    raise RuntimeError(f"{label}: images failed: {summary.failed}")
                batches[label] += counter.sizes
    finally:
        rendering_log.setLevel(level)
        if args.output_dir is None:
            shutil.rmtree(out_root, ignore_errors=True)
    results = []
    for label, (bs, precision, compile) in configs.items():
        total = len(files) * args.iters
        results.append({
            "config": label, "batch_size": bs, "precision": precision, "compile": compile,
            "images": total, "seconds": seconds[label], "img_per_s": total / seconds[label],
            "model_calls": len(batches[label]),
            "batch_histogram": dict(sorted(collections.Counter(batches[label]).items())),
        })
    report(results, args, files, print_fn)
    if args.json is not None:
        record = {"argv": list(argv), **header, "results": results}
        write_json(args.json, record)
    return results


def report(results: List[dict], args, files: Sequence[Path],
           print_fn: Callable[[str], None] = print) -> None:
    """The two rows and the after / before throughput ratio."""
    which = "same-size " if args.uniform_size else ""
    print_fn(f"\n## Demo folder throughput: {MODEL_NAMES[args.model]}, {len(files)} {which}"
             f"coco_tiny images, {args.iters} run(s) each, drawing and writing included\n")
    print_fn(format_table(
        ["configuration", "img/s", "s/img", "model calls", "images per call: calls"],
        [[r["config"], r["img_per_s"], r["seconds"] / r["images"], r["model_calls"],
          ", ".join(f"{k}: {v}" for k, v in r["batch_histogram"].items())]
         for r in results]))
    before, after = results
    print_fn(f"\nafter / before img/s: {after['img_per_s'] / before['img_per_s']:.2f} "
             "(batches form only from consecutive images of the same padded size)")


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    main()
