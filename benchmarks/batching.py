"""The batch dimension of ``bench_inference``: which images a batched call gets, timing several
batch sizes taking turns, the K-Net variants that go through the user-visible inference options,
and the per-batch-size ratios with the CPU targets.

Batches: call ``i`` of batch size ``B`` gets the ``B`` consecutive images starting at image
``i * B`` (cycling through the images when there are fewer than ``B``) and the model is called
on the whole list, as Detectron2's models are (``model(list_of_dicts)``; the model pads the
batch to its largest image). One *pass* at batch size ``B`` is ``ceil(num_images / B)`` calls,
so every batch size sees about the same number of images per pass.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .measure import time_interleaved
from .models import MODEL_NAMES
from .report import fmt_ratio

#: ``--amp`` value -> ``TEST.PRECISION`` / ``knet_d2.Predictor(precision=...)`` value
AMP_TO_PRECISION = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
#: variants that run K-Net through ``knet_d2.inference_options`` (what users get)
USER_VARIANTS = ("options", "options+compile")

#: CPU targets of the batched measurement (images/s ratios of the same run)
CPU_INSTANCE_TARGET = 2.0  # K-Net R50 instance fp32 eager / Cascade fp32 eager, batch 1
CPU_BEST_OPTION_TARGET = 2.5  # best user-visible K-Net option / Cascade fp32 eager, batch 1
CPU_PANOPTIC_TARGET = 1.5  # K-Net R50 panoptic / PanopticFPN, fp32 eager, batch 1
BATCH_GAIN_SIZE = 4  # K-Net per-image throughput at this batch size >= at batch 1


def batch_indices(call: int, batch_size: int, num_images: int) -> List[int]:
    """Image indices of call ``call`` at ``batch_size`` (cycling through ``num_images``)."""
    return [(call * batch_size + k) % num_images for k in range(batch_size)]


def calls_per_pass(num_images: int, batch_size: int) -> int:
    """Calls of one pass over ``num_images`` images at ``batch_size`` (at least one)."""
    return max(1, math.ceil(num_images / batch_size))


def user_options_model(model: nn.Module, amp: str, compile: bool) -> nn.Module:
    """A copy of ``model`` (weights and calibrated FrozenBN statistics included) with
    ``knet_d2.inference_options`` installed for the precision of ``amp`` and ``compile``: the
    same code path as ``knet_d2.Predictor(precision=..., compile=...)`` / ``TEST.PRECISION``
    / ``TEST.COMPILE``."""
    from knet_d2.inference_options import install_inference_options

    user = copy.deepcopy(model)
    install_inference_options(user, AMP_TO_PRECISION[amp], compile)
    return user


def time_batch_sizes(
    runners: Dict[str, Callable[[int], object]], batch_size_of: Dict[str, int],
    num_images: int, iters: int, device: torch.device,
    on_result: Optional[Callable[[str, object], None]] = None,
) -> Dict[str, float]:
    """Mean seconds per call of every runner.

    ``iters`` rounds; in each round every batch size makes one pass over the images, its
    runners taking turns call by call (:func:`time_interleaved`), so load changes of a shared
    machine hit every model and every batch size alike.
    """
    sizes = sorted(set(batch_size_of.values()))
    totals = {name: 0.0 for name in runners}
    counts = {name: 0 for name in runners}
    for _ in range(iters):
        for bs in sizes:
            group = {n: fn for n, fn in runners.items() if batch_size_of[n] == bs}
            calls = list(range(calls_per_pass(num_images, bs)))
            seconds = time_interleaved(group, calls, device, on_result)
            for name, s in seconds.items():
                totals[name] += s * len(calls)
                counts[name] += len(calls)
    return {name: totals[name] / counts[name] for name in runners}


def compile_combinations(runners: Sequence, num_images: int) -> int:
    """Distinct (model, precision, batch size, padded batch size) of ``runners``' calls over one
    pass: how many graphs a static-shape ``torch.compile`` without graph breaks makes."""
    combos = set()
    for r in runners:
        d = max(int(r.model.size_divisibility), 1)
        for call in range(calls_per_pass(num_images, r.batch_size)):
            shapes = [r.inputs[j]["image"].shape[-2:]
                      for j in batch_indices(call, r.batch_size, num_images)]
            h, w = max(s[0] for s in shapes), max(s[1] for s in shapes)
            combos.add((r.key, r.amp, r.batch_size, -(-h // d) * d, -(-w // d) * d))
    return len(combos)


def find(results: List[dict], model: str, amp: str, variant: str = "eager",
         batch_size: int = 1) -> Optional[dict]:
    """The result row of (model, precision, variant, batch size), or None."""
    for r in results:
        if (r["model"], r["amp"], r["variant"], r["batch_size"]) == (
                model, amp, variant, batch_size):
            return r
    return None


def batch_ratio_rows(results: List[dict]) -> List[list]:
    """Per batch size: K-Net / D2 images/s ratios (fp32 eager and every K-Net variant of the
    same precision vs the D2 model's eager row), and every row's per-image throughput at batch
    N / batch 1. Rows: [batch, ratio label, value, target, met]."""
    rows = []
    sizes = sorted({r["batch_size"] for r in results})
    pairs = [("knet_instance", "cascade_mask_rcnn"), ("knet_instance", "mask_rcnn"),
             ("knet_panoptic", "panoptic_fpn")]
    for bs in sizes:
        for num, den in pairs:
            for n in [r for r in results if (r["model"], r["batch_size"]) == (num, bs)]:
                d = find(results, den, n["amp"], "eager", bs)
                if d is None:
                    continue
                rows.append([bs, f"{MODEL_NAMES[num]} ({n['amp']}, {n['variant']}) / "
                                 f"{MODEL_NAMES[den]} ({d['amp']}, eager)",
                             *fmt_ratio(n["img_per_s"] / d["img_per_s"], None)])
    base = min(sizes)
    for bs in [s for s in sizes if s != base]:
        for r in [r for r in results if r["batch_size"] == bs]:
            b1 = find(results, r["model"], r["amp"], r["variant"], base)
            if b1 is not None:
                rows.append([bs, f"{MODEL_NAMES[r['model']]} ({r['amp']}, {r['variant']}): "
                                 f"img/s batch {bs} / batch {base}",
                             *fmt_ratio(r["img_per_s"] / b1["img_per_s"], None)])
    return rows


def target_rows(results: List[dict]) -> List[list]:
    """The CPU targets, each [target, measured from, value, target, met]; a target whose rows
    were not measured says so (value "not measured")."""
    rows = []
    cascade = find(results, "cascade_mask_rcnn", "none")
    knet = find(results, "knet_instance", "none")

    def add(label: str, source: str, num: Optional[dict], den: Optional[dict],
            target: float) -> None:
        if num is None or den is None:
            rows.append([label, source, "not measured", f">= {target:g}", "-"])
        else:
            rows.append([label, source, *fmt_ratio(num["img_per_s"] / den["img_per_s"], target)])

    add("K-Net R50 instance / Cascade Mask R-CNN, batch 1",
        "fp32 eager / fp32 eager", knet, cascade, CPU_INSTANCE_TARGET)
    user = [r for r in results if r["model"] == "knet_instance" and r["batch_size"] == 1
            and (r["variant"] in USER_VARIANTS or (r["amp"], r["variant"]) == ("none", "eager"))]
    best = max(user, key=lambda r: r["img_per_s"], default=None)
    add("K-Net R50 instance best user-visible option / Cascade, batch 1",
        f"{AMP_TO_PRECISION[best['amp']]} {best['variant']} / fp32 eager" if best else "-",
        best, cascade,
        CPU_BEST_OPTION_TARGET)
    add("K-Net R50 panoptic / PanopticFPN, batch 1", "fp32 eager / fp32 eager",
        find(results, "knet_panoptic", "none"), find(results, "panoptic_fpn", "none"),
        CPU_PANOPTIC_TARGET)
    for key in ("knet_instance", "knet_panoptic"):
        add(f"{MODEL_NAMES[key]} per-image img/s, batch {BATCH_GAIN_SIZE} / batch 1",
            "fp32 eager", find(results, key, "none", "eager", BATCH_GAIN_SIZE),
            find(results, key, "none"), 1.0)
    return rows


def report_batches(results: List[dict], device: str,
                   print_fn: Callable[[str], None] = print) -> Dict[str, List[list]]:
    """Print the per-batch-size ratio table and (on the CPU) the target table; returns both
    (the JSON's ``batch_ratios`` and ``cpu_targets``)."""
    from .report import format_table

    ratios = batch_ratio_rows(results)
    if ratios:
        print_fn("\n## Ratios per batch size (same run; images/s per image)\n")
        print_fn(format_table(["batch", "ratio", "value", "target", "met"], ratios))
    targets = target_rows(results) if device == "cpu" else []
    if targets:
        print_fn("\n## CPU targets (met: yes / **no**)\n")
        print_fn(format_table(["target", "rows", "value", "target", "met"], targets))
        print_fn("user-visible rows: fp32 eager (the default) and the 'options' variants "
                 "(knet_d2.inference_options, what TEST.PRECISION / TEST.COMPILE and "
                 "knet_d2.Predictor(precision=, compile=) run); 'eager' bf16 and 'compile' rows "
                 "use the benchmark's own autocast / torch.compile")
    return {"batch_ratios": ratios, "cpu_targets": targets}


def check_batch_sizes(batch_sizes: Sequence[int]) -> Optional[str]:
    """An error message for bad ``--batch-sizes``, else None."""
    if min(batch_sizes) < 1:
        return f"--batch-sizes must all be >= 1, got {list(batch_sizes)}"
    if len(set(batch_sizes)) != len(batch_sizes):
        return f"--batch-sizes has duplicates: {list(batch_sizes)}"
    return None
