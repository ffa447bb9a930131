#!/usr/bin/env python
"""Where K-Net's inference time goes: wall time per stage of the model (ResNet, FPN, neck,
kernel head, update stages, post-processing) on real coco_tiny val2017 images, for each
``MODEL.KNET.TEST.CHANNELS_LAST`` mode and batch size, in one run.

This is the profile that guides the CPU optimisations of the inference path: every
(mode, batch size) variant runs the same model (same random weights, FrozenBN calibrated as in
``bench_inference``), the variants taking turns call by call (``measure.time_interleaved``), so
the sections of two variants are comparable in one run. The outputs of every variant are
compared with the first one (``--modes`` order; "off" = NCHW by default).

Usage::

    python -m benchmarks.bench_sections --device cpu --threads 2 --num-images 4 \\
        --modes off auto --batch-sizes 1 4 --json sections.json

Sections (ms per image): ``resnet`` (``backbone.bottom_up``), ``fpn`` (rest of the backbone),
``neck``, ``kernel head`` (stage 0), ``update stages`` (all stages), ``post-processing``
(``KNet.inference``: mask resizing, top-k / panoptic merge), ``other`` (the rest of the call:
normalisation, padding, stride-4 upsampling).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .bench_lock import benchmark_lock
from .cli import add_common_args, environment, refuse_existing, run_header, setup_run
from .data import coco_tiny_inputs, inputs_for
from .measure import SectionTimer, synchronize, time_interleaved
from .models import MODEL_NAMES, build_cfg, build_model_from_cfg, calibrate_frozen_bn
from .report import format_table

SECTIONS = ("resnet", "fpn", "neck", "kernel head", "update stages", "post-processing", "other")
KNET_MODELS = ["knet_instance", "knet_panoptic"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--num-images", type=int, default=2, help="coco_tiny val images")
    p.add_argument("--models", nargs="+", default=KNET_MODELS, choices=KNET_MODELS)
    p.add_argument("--modes", nargs="+", default=["off", "auto"], choices=["off", "auto", "on"],
                   help="MODEL.KNET.TEST.CHANNELS_LAST values to compare (first = reference)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1],
                   help="images per model call (consecutive images, padded together)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    refuse_existing(p, args, "json")
    if min(args.num_images, args.iters, *args.batch_sizes) < 1 or args.warmup < 0:
        p.error("--num-images, --iters and --batch-sizes must be >= 1, --warmup >= 0")
    if args.amp not in (None, ["none"]):
        p.error("--amp: this benchmark profiles fp32 (use bench_inference for bf16)")
    if args.channels_last:
        p.error("--channels-last: use --modes (MODEL.KNET.TEST.CHANNELS_LAST) here")
    return args


def instrument(model: torch.nn.Module, timer: SectionTimer) -> None:
    """Time the stages of one KNet instance (instance attributes; the class is untouched)."""
    timer.wrap(model.backbone.bottom_up, "forward", "resnet")
    timer.wrap(model.backbone, "forward", "backbone")
    timer.wrap(model.neck, "forward", "neck")
    timer.wrap(model.kernel_head, "forward", "kernel head")
    for head in model.update_heads:
        timer.wrap(head, "forward", "update stages")
    timer.wrap(model, "inference", "post-processing")


def split_sections(totals: Dict[str, float], call_s: float) -> Dict[str, float]:
    """Seconds per section of one call: ``fpn`` = backbone - resnet, ``other`` = the rest."""
    out = {name: totals.get(name, 0.0) for name in SECTIONS if name not in ("fpn", "other")}
    out["fpn"] = totals.get("backbone", 0.0) - totals.get("resnet", 0.0)
    out["other"] = call_s - sum(out.values())
    return {name: out[name] for name in SECTIONS}


def output_difference(ref: List[dict], got: List[dict]) -> Dict[str, float]:
    """Fractions of instance-mask pixels / panoptic pixels that differ, max score difference."""
    res: Dict[str, float] = {}
    pairs = list(zip(ref, got))
    if "instances" in ref[0]:
        diff = [(a["instances"].pred_masks != b["instances"].pred_masks).float().mean()
                for a, b in pairs]
        res["mask pixels differ"] = float(torch.stack(diff).mean())
        res["max |score diff|"] = max(
            float((a["instances"].scores - b["instances"].scores).abs().max()) for a, b in pairs
        )
    if "panoptic_seg" in ref[0]:
        diff = [(a["panoptic_seg"][0] != b["panoptic_seg"][0]).float().mean() for a, b in pairs]
        res["panoptic pixels differ"] = float(torch.stack(diff).mean())
    return res


def measure_model(key: str, args: argparse.Namespace, images: List[dict],
                  device: torch.device) -> List[dict]:
    """Rows ``{model, mode, batch, ms_per_image, sections_ms, difference}`` of one model."""
    model = build_model_from_cfg(build_cfg(key, args.device))
    inputs = inputs_for(key, images, device)
    calibrate_frozen_bn(model, inputs[:1])
    timer = SectionTimer(device)
    instrument(model, timer)
    n = len(inputs)
    variants = [(mode, b) for b in args.batch_sizes for mode in args.modes]
    sums = {v: dict.fromkeys(SECTIONS, 0.0) for v in variants}

    def runner(mode: str, b: int) -> Callable[[int], object]:
        def run(i: int) -> List[dict]:
            model.channels_last = mode
            timer.reset()
            with torch.no_grad():
                synchronize(device)
                t0 = time.perf_counter()
                out = model([inputs[(i + j) % n] for j in range(b)])
                synchronize(device)
                call_s = time.perf_counter() - t0
            for name, s in split_sections(timer.totals, call_s).items():
                sums[(mode, b)][name] += s
            return out
        return run

    runners = {v: runner(*v) for v in variants}
    for fn in runners.values():
        for _ in range(args.warmup):
            fn(0)
    first_outputs = {v: fn(0) for v, fn in runners.items()}
    diffs = {(mode, b): output_difference(first_outputs[(args.modes[0], b)], out)
             for (mode, b), out in first_outputs.items()}
    for v in variants:  # untimed so far: warm-up and the comparison
        sums[v] = dict.fromkeys(SECTIONS, 0.0)
    calls = [i for _ in range(args.iters) for i in range(n)]
    time_interleaved(runners, calls, device)
    rows = []
    for (mode, b) in variants:
        images_run = len(calls) * b
        per_image = {k: 1e3 * s / images_run for k, s in sums[(mode, b)].items()}
        rows.append({"model": MODEL_NAMES[key], "mode": mode, "batch": b,
                     "ms_per_image": sum(per_image.values()), "sections_ms": per_image,
                     "difference": diffs[(mode, b)]})
    return rows


def report(rows: List[dict], modes: Sequence[str], print_fn: Callable[[str], None] = print
           ) -> None:
    """Per model and batch: a section x mode table with the share of each section and the
    speed-up of every mode over the first."""
    print_fn("\n## Inference time per section (ms per image)\n")
    groups: Dict[tuple, Dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["batch"]), {})[r["mode"]] = r
    for (model, b), by_mode in groups.items():
        ref = by_mode[modes[0]]
        header = ["section"] + [f"{m} ms" for m in modes] + [f"{m} %" for m in modes[:1]]
        header += [f"{modes[0]} / {m}" for m in modes[1:]]
        ms = {m: {**r["sections_ms"], "total": r["ms_per_image"]} for m, r in by_mode.items()}
        table = []
        for name in [*SECTIONS, "total"]:
            ref_ms = ms[modes[0]][name]
            cells: List[object] = [name] + [ms[m][name] for m in modes]
            cells.append(100.0 * ref_ms / ref["ms_per_image"])
            cells += [ref_ms / ms[m][name] if ms[m][name] > 0 else float("nan")
                      for m in modes[1:]]
            table.append(cells)
        print_fn(f"\n### {model}, batch {b} (CHANNELS_LAST modes {', '.join(modes)})\n")
        print_fn(format_table(header, table))
        for m in modes[1:]:
            d = ", ".join(f"{k} {v:.3g}" for k, v in by_mode[m]["difference"].items())
            print_fn(f"outputs of '{m}' vs '{modes[0]}' (first batch): {d}")


def main(argv: Optional[Sequence[str]] = None, print_fn: Callable[[str], None] = print
         ) -> List[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with benchmark_lock(__spec__.name, argv):
        return run(args, argv, print_fn)


def run(args: argparse.Namespace, argv: List[str], print_fn: Callable[[str], None] = print
        ) -> List[dict]:
    device = setup_run(args)
    header = run_header(argv, __spec__.name, args.device, args.threads)
    for line in environment(header):
        print_fn(line)
    images = coco_tiny_inputs(args.data_root, args.num_images, args.min_size, args.max_size)
    print_fn(f"inputs: {len(images)} coco_tiny val2017 images, resized to "
             f"{sorted({tuple(x['image'].shape[-2:]) for x in images})}, batch sizes "
             f"{args.batch_sizes}")
    rows = [r for key in args.models for r in measure_model(key, args, images, device)]
    report(rows, args.modes, print_fn)
    if args.json is not None:
        args.json.write_text(json.dumps({"argv": argv, **header, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
