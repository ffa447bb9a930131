#!/usr/bin/env python
"""Speed of the torch-free runtime against PyTorch on the CPU: images/s of one K-Net R50, from a
BGR image (``cv2.imread``) to its outputs at the image's size, through ``knet_d2.Predictor``
(PyTorch, fp32) and through ``knet_onnx.KNetOnnxModel`` (ONNX Runtime, the same model exported
with ``knet_d2.export.export_onnx``, dynamic sizes).

The model (``--model``: this project's COCO config, ``INPUT.MIN_SIZE_TEST`` /
``MAX_SIZE_TEST`` from ``--min-size`` / ``--max-size``) has random weights, FrozenBN statistics
calibrated on the first image (``benchmarks.models``) so that activations are finite; the
export is made from that model, so both runtimes hold the same weights. Both paths include
their own resizing, normalisation and post-processing (the ONNX graph ends at the kernels'
logits; ``knet_onnx`` post-processes with numpy). Inputs: the first ``--num-images`` coco_tiny
val images, read once with OpenCV.

A third row times the ONNX graph alone (``KNetOnnxModel.run_graph`` on the normalised, padded
batch that ``predict`` builds, prepared outside the timing): the share of ``knet_onnx``'s time
that is ONNX Runtime's, the rest being its numpy pre- and post-processing.

Timing: the runners take turns image by image (``benchmarks.measure.time_interleaved``) after
one untimed pass over the images each; ONNX Runtime gets ``--threads`` intra-op threads and
``knet_onnx``'s post-processing ``--threads`` threads, as torch does. The ONNX file goes to a
temporary folder, deleted at the end.

``--keep-freed-host-memory`` makes glibc's malloc keep freed memory for the whole process
first (both runtimes): post-processing at the image's size allocates maps of tens of MB whose
pages are otherwise mapped anew at every image. A process-wide setting: compare it across two
runs of this script, each printing both runtimes.

Usage::

    python -m benchmarks.bench_onnx_runtime --threads 2 --num-images 4 --iters 2 \
        --json output/bench_onnx_runtime.json
    python -m benchmarks.bench_onnx_runtime --threads 2 --keep-freed-host-memory
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

from .bench_lock import run_locked
from .cli import (
    add_common_args,
    apply_keep_freed_host_memory,
    environment,
    refuse_existing,
    run_header,
    setup_run,
    write_json,
)
from .data import coco_tiny_inputs, inputs_for
from .measure import time_interleaved
from .models import KNET_CONFIGS, MODEL_NAMES, calibrate_frozen_bn, knet_cfg
from .report import format_table


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--model", default="knet_panoptic", choices=sorted(KNET_CONFIGS))
    p.add_argument("--num-images", type=int, default=4, help="coco_tiny val images")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--keep-freed-host-memory", action="store_true",
                   help="glibc's malloc keeps freed memory for reuse, for both runtimes: what "
                        "KEEP_FREED_HOST_MEMORY does in train_net.py and demo/demo.py, and the "
                        "environment variables MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=... do "
                        "for any process")
    args = p.parse_args(argv)
    refuse_existing(p, args, "json")
    if args.device != "cpu":
        p.error("bench_onnx_runtime measures the CPU (--device cpu)")
    if args.amp not in (None, ["none"]):
        p.error("bench_onnx_runtime measures fp32 only (--amp none)")
    if min(args.num_images, args.iters) < 1:
        p.error("--num-images and --iters must be >= 1")
    return args


def _bgr_images(inputs: List[dict]) -> List[np.ndarray]:
    images = []
    for item in inputs:
        image = cv2.imread(item["file_name"], cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{item['file_name']}: OpenCV cannot read this image")
        images.append(image)
    return images


def build_runtimes(args, tmp: Path, first: dict):
    """(``knet_d2.Predictor``, ``KNetOnnxModel``) holding the same random weights, FrozenBN
    calibrated on ``first`` (a :func:`coco_tiny_inputs` item), which also traces the export."""
    import onnxruntime as ort

    from knet_d2 import Predictor
    from knet_d2.export import export_onnx, preprocess_batch, preprocess_params
    from knet_onnx import KNetOnnxModel

    cfg = knet_cfg(args.model, "cpu", [
        "INPUT.MIN_SIZE_TEST", str(args.min_size), "INPUT.MAX_SIZE_TEST", str(args.max_size),
    ])
    torch.manual_seed(args.seed)
    predictor = Predictor(cfg, weights="", strict=False)
    calibrate_frozen_bn(predictor.model, inputs_for(args.model, [first], torch.device("cpu")))
    images = preprocess_batch([first], **preprocess_params(predictor.model)).tensor
    export_onnx(predictor.model, images, tmp / "model.onnx", dynamic=True, cfg=predictor.cfg)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    return predictor, KNetOnnxModel.load(tmp / "model.onnx", session_options=options,
                                         threads=args.threads)


def run(args, argv: Sequence[str], print_fn: Callable[[str], None] = print) -> Dict[str, object]:
    setup_run(args)
    apply_keep_freed_host_memory(args)
    header = run_header(argv, __spec__.name, "cpu", args.threads)
    for line in environment(header):
        print_fn(line)
    inputs = coco_tiny_inputs(args.data_root, args.num_images, args.min_size, args.max_size)
    images = _bgr_images(inputs)
    with tempfile.TemporaryDirectory(prefix="bench_onnx_runtime_") as tmp:
        predictor, onnx_model = build_runtimes(args, Path(tmp), inputs[0])
        # the batches predict() feeds its graph, built outside the timing
        batches = [onnx_model.pad_batch([onnx_model.prepare(image)])[0] for image in images]
        runners = {
            "PyTorch (knet_d2.Predictor)": lambda i: predictor(images[i % len(images)]),
            "ONNX Runtime (knet_onnx)": lambda i: onnx_model.predict(images[i % len(images)]),
            "ONNX graph alone (run_graph)": lambda i: onnx_model.run_graph(
                batches[i % len(batches)]),
        }
        device = torch.device("cpu")
        with torch.no_grad():
            time_interleaved(runners, range(len(images)), device)  # warm-up
            seconds = time_interleaved(runners, range(len(images) * args.iters), device)
    base = next(iter(seconds.values()))
    rows = [{"runtime": name, "s_per_img": s, "img_per_s": 1.0 / s, "vs_pytorch": base / s}
            for name, s in seconds.items()]
    kept = ", malloc keeps freed memory" if args.keep_freed_host_memory else ""
    print_fn(f"\n## {MODEL_NAMES[args.model]}, fp32, batch 1, {args.threads} threads, "
             f"{len(images)} images x {args.iters}{kept}\n")
    print_fn(format_table(["runtime", "img/s", "ms/img", "speed vs PyTorch"],
                          [[r["runtime"], r["img_per_s"], r["s_per_img"] * 1000, r["vs_pytorch"]]
                           for r in rows]))
    record = {"argv": list(argv), **header, "model": args.model,
              "keep_freed_host_memory": args.keep_freed_host_memory,
              "input_sizes": sorted({tuple(x["image"].shape[1:]) for x in inputs}),
              "results": rows}
    if args.json is not None:
        write_json(args.json, record)
    return record


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    main()
