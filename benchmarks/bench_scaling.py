#!/usr/bin/env python
"""How inference time and peak memory grow with the input size and K-Net's number of proposals:
K-Net R50 instance (``MODEL.KNET.NUM_PROPOSALS`` each of ``--proposals``) vs D2 Cascade Mask
R-CNN R50-FPN, fp32, batch 1, on real coco_tiny val2017 images.

Input sizes: for each long side ``L`` of ``--sizes`` the images go through D2's test resize with
``max_size = L`` and ``min_size = round(L * 800 / 1333)`` (D2's 800 / 1333 proportion), i.e.
D2's default test size scaled by ``L / 1333``: ``L`` caps the long side, which wide images
reach (a 4:3 photo at ``L`` = 1333 is 800 x 1067, as in D2's evaluation).

Models, random weights, FrozenBN calibration and the 100-detection workload of the D2 model are
those of ``bench_inference`` (see ``benchmarks.models``).

Usage::

    python -m benchmarks.bench_scaling --device cpu --threads 2 --num-images 2 \\
        --json scaling.json --plot scaling.png

Timing: per input size, the models take turns call by call (``measure.time_interleaved``), after
``--warmup`` calls each and one peak-memory call on the largest image. Prints a table (one row
per model and size), the growth of time and memory relative to the smallest size, and writes
``--json`` / ``--plot`` (two panels: ms/image and peak memory vs long side, one line per model).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .bench_inference import Runner
from .bench_lock import run_locked
from .cli import add_common_args, environment, refuse_existing, run_header, setup_run, write_json
from .data import coco_tiny_inputs, inputs_for
from .measure import PeakMemory, time_interleaved
from .models import MODEL_NAMES, build_cfg, build_model_from_cfg, calibrate_frozen_bn
from .report import count_outputs, format_table

#: D2's test resize: short side 800 for a long side of 1333
D2_MIN_SIZE, D2_MAX_SIZE = 800, 1333
DEFAULT_SIZES = [512, 800, 1024, 1333]
DEFAULT_PROPOSALS = [100, 256]
CASCADE = "cascade_mask_rcnn"


def min_size_for(long_side: int) -> int:
    """The short side that keeps D2's 800 / 1333 proportion for ``long_side``."""
    return round(long_side * D2_MIN_SIZE / D2_MAX_SIZE)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--num-images", type=int, default=2, help="coco_tiny val images")
    p.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES,
                   help="long-side caps of the inputs (short side in D2's 800/1333 "
                        "proportion; replace --min-size / --max-size)")
    p.add_argument("--proposals", type=int, nargs="+", default=DEFAULT_PROPOSALS,
                   help="K-Net MODEL.KNET.NUM_PROPOSALS values, each a model")
    p.add_argument("--no-cascade", action="store_true", help="K-Net only")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--plot", type=Path, default=None, help="also draw the PNG plot here")
    args = p.parse_args(argv)
    refuse_existing(p, args, "json", "plot")
    if min(args.num_images, args.iters, *args.sizes, *args.proposals) < 1 or args.warmup < 0:
        p.error("--num-images, --iters, --sizes and --proposals must be >= 1, --warmup >= 0")
    if args.amp not in (None, ["none"]):
        p.error("bench_scaling measures fp32 only (--amp none)")
    return args


def model_label(key: str, proposals: Optional[int]) -> str:
    return MODEL_NAMES[key] + (f", {proposals} proposals" if proposals else "")


def build_models(args, device: torch.device, calibration: List[dict]) -> Dict[str, tuple]:
    """{label: (key, proposals, model)}; FrozenBN calibrated on ``calibration`` (RGB, one
    image at the largest size)."""
    specs = [("knet_instance", n) for n in args.proposals]
    if not args.no_cascade:
        specs.append((CASCADE, None))
    models = {}
    for key, proposals in specs:
        torch.manual_seed(args.seed)
        opts = ["MODEL.KNET.NUM_PROPOSALS", str(proposals)] if proposals else []
        model = build_model_from_cfg(build_cfg(key, args.device, opts))
        calibrate_frozen_bn(model, inputs_for(key, calibration, device))
        models[model_label(key, proposals)] = (key, proposals, model)
    return models


def measure_size(args, device: torch.device, models: Dict[str, tuple], long_side: int,
                 print_fn: Callable[[str], None] = print) -> List[dict]:
    """One result row per model at ``long_side``: warm-up, peak memory of one call on the
    largest image, then the models taking turns over ``--iters`` passes of the images."""
    images = coco_tiny_inputs(args.data_root, args.num_images, min_size_for(long_side),
                              long_side)
    shapes = [tuple(x["image"].shape[-2:]) for x in images]
    print_fn(f"long side {long_side}: {len(images)} images resized to {sorted(set(shapes))}")
    runners = {label: Runner(key, model, inputs_for(key, images, device), device, "none",
                             "eager")
               for label, (key, _, model) in models.items()}
    for runner in runners.values():
        for i in range(args.warmup):
            runner(i)
    largest = max(range(len(images)), key=lambda i: shapes[i][0] * shapes[i][1])
    memory = {}
    for label, runner in runners.items():
        with PeakMemory(device) as mem:
            runner(largest)
        memory[label] = mem
    counts: Dict[str, List[dict]] = {label: [] for label in runners}
    seconds = time_interleaved(runners, list(range(args.iters * len(images))), device,
                               on_result=lambda name, out: counts[name].extend(out))
    return [{
        "model": key, "proposals": proposals, "label": label,
        "long_side": long_side, "min_size": min_size_for(long_side),
        "input_sizes": sorted(set(shapes)),
        "s_per_img": seconds[label], "img_per_s": 1.0 / seconds[label],
        "peak_mib": memory[label].peak_mib, "extra_mib": memory[label].extra_mib,
        "mem_method": memory[label].method, **count_outputs(counts[label]),
    } for label, (key, proposals, _) in models.items()]


def run(args, argv: Sequence[str], print_fn: Callable[[str], None] = print) -> List[dict]:
    """Build the models once, then measure each input size (models taking turns)."""
    device = setup_run(args)
    header = run_header(argv, __spec__.name, args.device, args.threads)
    for line in environment(header):
        print_fn(line)
    top = max(args.sizes)
    models = build_models(args, device, coco_tiny_inputs(args.data_root, 1, min_size_for(top),
                                                         top))
    results = []
    for long_side in args.sizes:
        results += measure_size(args, device, models, long_side, print_fn)
    report(results, print_fn)
    if args.json is not None:
        record = {"argv": list(argv), **header, "results": results}
        write_json(args.json, record)
    if args.plot is not None:
        plot(results, args.plot)
        print_fn(f"plot: {args.plot}")
    return results


def growth_rows(results: List[dict]) -> List[list]:
    """Per model and size: ms/image and extra memory relative to the model's smallest size."""
    rows = []
    for label in dict.fromkeys(r["label"] for r in results):
        mine = sorted((r for r in results if r["label"] == label), key=lambda r: r["long_side"])
        base = mine[0]
        for r in mine:
            rows.append([label, r["long_side"], r["s_per_img"] / base["s_per_img"],
                         r["extra_mib"] / max(base["extra_mib"], 1e-9)])
    return rows


def report(results: List[dict], print_fn: Callable[[str], None] = print) -> None:
    """Print the measurements and their growth with the input size."""
    print_fn("\n## Scaling with input size (fp32, batch 1)\n")
    print_fn(format_table(
        ["model", "long side", "img/s", "ms/img", "peak MiB", "extra MiB", "instances/img"],
        [[r["label"], r["long_side"], r["img_per_s"], r["s_per_img"] * 1000, r["peak_mib"],
          r["extra_mib"], r.get("instances", "-")] for r in results]))
    print_fn(f"\nmemory (one call on the largest image): {results[0]['mem_method']}")
    short = [r for r in results if r["model"] == CASCADE and r.get("instances") != 100]
    if short:
        print_fn("WARNING: Cascade below the forced 100 detections/image at long side "
                 + ", ".join(f"{r['long_side']} ({r.get('instances')})" for r in short))
    print_fn("\n## Growth relative to the smallest size\n")
    print_fn(format_table(["model", "long side", "time x", "extra memory x"],
                          growth_rows(results)))


def plot(results: List[dict], path: Path) -> None:
    """Two panels, ms/image and extra peak memory vs long side, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label in dict.fromkeys(r["label"] for r in results):
        mine = sorted((r for r in results if r["label"] == label), key=lambda r: r["long_side"])
        sides = [r["long_side"] for r in mine]
        ax_t.plot(sides, [r["s_per_img"] * 1000 for r in mine], marker="o", label=label)
        ax_m.plot(sides, [r["extra_mib"] for r in mine], marker="o", label=label)
    ax_t.set(xlabel="input long side (px)", ylabel="ms / image", title="inference time")
    ax_m.set(xlabel="input long side (px)", ylabel="extra peak memory (MiB)",
             title="peak memory")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({r["long_side"] for r in results}))
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    main()
