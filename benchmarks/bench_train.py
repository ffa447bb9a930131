#!/usr/bin/env python
"""Training step time and peak memory of K-Net R50 panoptic vs D2 Mask R-CNN and PanopticFPN.

One process run, the same batch for every model: the ``--batch-size`` (2) images of
``coco_panoptic_sample`` with their real COCO panoptic annotations, read by D2's
``load_coco_panoptic_json`` and mapped by K-Net's real training mapper (``knet_panoptic``,
resize to short side ``--min-size`` 800 / long side <= ``--max-size`` 1333, no flip so every
model sees identical pixels). D2's models get the same arrays in their formats: BGR images;
Mask R-CNN the thing instances (``gt_boxes``, ``gt_classes``, ``gt_masks``); PanopticFPN also
``sem_seg`` in its layout (every thing pixel 0, stuff class ``T + j`` -> ``j + 1``, void 255),
which is what D2's ``prepare_panoptic_fpn.py`` + ``DatasetMapper`` give.

A step is forward (losses) + backward + optimizer step, each model with its own optimizer
(K-Net: AdamW with full-model gradient clipping, ``knet_d2.solver``; D2: SGD from
``detectron2.solver.build_optimizer``). Weights are random with calibrated FrozenBN statistics
(``benchmarks.models.calibrate_frozen_bn``).

Timing: every model is built and warmed up first, each one's peak memory is measured over one
step alone, then the models take turns step by step (each step between two device
synchronisations), so that load changes of a shared machine hit all models alike.

K-Net's share of the step in matching and losses: right after K-Net's warm-up, before the
other models are built, ``--iters`` K-Net steps run alone (as in a real training run; on a
2-core VM, a process also holding the D2 models and their optimizers was seen to double the
time of K-Net's allocation-heavy loss code) with timers around
``KNet.prepare_targets``, ``KNetCriterion.match_stages`` and ``KNetCriterion.forward``
(instance attributes set by this script only; the model code has no timing in it). The
backward of the losses, which autograd runs interleaved with the rest, is timed separately:
the criterion's inputs are detached into leaves and ``backward`` of the summed losses runs
down to them only. The share is (targets + matching + losses forward + backward) / the time
of those steps alone.

``--memory-formats nchw channels_last`` times every model both ways in the same interleaved
run: ``channels_last`` is ``SOLVER.CHANNELS_LAST`` (the backbone gets its image batch in NHWC
layout while it trains, :func:`knet_d2.engine.channels_last.train_in_channels_last`), applied
to D2's models the same way; the speed-up per model and precision is printed with the ratios.

``--keep-freed-host-memory`` applies ``KEEP_FREED_HOST_MEMORY`` (glibc's malloc keeps freed
memory for reuse) to the whole process first, so every model steps with it. The memory columns
then measure another allocator's behaviour (one step's peak-RSS increase on a heap that keeps
and reuses freed blocks): compare them within such a run, not with a run without the flag.

Usage::

    python -m benchmarks.bench_train --device cpu --threads 1 --warmup 1 --iters 2
    python -m benchmarks.bench_train --device cuda --amp none bf16 --warmup 3 --iters 10
    python -m benchmarks.bench_train --memory-formats nchw channels_last --models knet_panoptic
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from detectron2.utils.events import EventStorage

from knet_d2.engine.channels_last import train_in_channels_last

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
from .data import d2_batch, panoptic_batch
from .measure import PeakMemory, SectionTimer, autocast, synchronize, time_interleaved
from .models import MODEL_NAMES, build_cfg, build_model_from_cfg, calibrate_frozen_bn
from .report import fmt_ratio, format_table

ALL_MODELS = ["knet_panoptic", "mask_rcnn", "panoptic_fpn"]
MEMORY_FORMATS = ["nchw", "channels_last"]  # channels_last: SOLVER.CHANNELS_LAST
LOSS_SHARE_TARGET = 0.10  # matching + losses <= 10% of a K-Net training step


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--batch-size", type=int, default=2,
                   help="images per step (coco_panoptic_sample has 2; more repeat them)")
    p.add_argument("--models", nargs="+", default=ALL_MODELS, choices=ALL_MODELS)
    p.add_argument("--memory-formats", nargs="+", default=["nchw"], choices=MEMORY_FORMATS,
                   help="image-batch layouts to train each model in, timed side by side "
                        "(channels_last: what SOLVER.CHANNELS_LAST does)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--keep-freed-host-memory", action="store_true",
                   help="glibc's malloc keeps freed memory for reuse, as the config key "
                        "KEEP_FREED_HOST_MEMORY does in a training run (all models alike)")
    args = p.parse_args(argv)
    refuse_existing(p, args, "json")
    if args.channels_last:
        p.error("--channels-last: use --memory-formats channels_last (SOLVER.CHANNELS_LAST) here")
    if min(args.batch_size, args.iters) < 1 or args.warmup < 0:
        p.error("--batch-size and --iters must be >= 1, --warmup >= 0")
    return args


# ---------------------------------------------------------------------------- steps
def build_optimizer(key: str, cfg, model) -> torch.optim.Optimizer:
    if key.startswith("knet"):
        from knet_d2.solver import build_knet_optimizer

        return build_knet_optimizer(cfg, model)
    from detectron2.solver import build_optimizer as d2_build_optimizer

    return d2_build_optimizer(cfg, model)


class Stepper:
    """One training step of ``model``: forward + backward + optimizer step (AMP aware)."""

    def __init__(self, model, optimizer, batch: List[dict], device: torch.device, amp: str):
        self.model, self.optimizer, self.batch = model, optimizer, batch
        self.device, self.amp = device, amp
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def __call__(self) -> torch.Tensor:
        with autocast(self.device, self.amp):
            loss_dict = self.model(self.batch)
        loss = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self._loss_dict = loss_dict
        return loss

    def losses(self) -> Dict[str, float]:
        return {k: float(v.detach()) for k, v in self._loss_dict.items()}


def _detach_tree(obj):
    """Detached leaf copies (requires_grad) of every float tensor in nested dicts / lists."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().requires_grad_(obj.is_floating_point())
    if isinstance(obj, dict):
        return {k: _detach_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detach_tree(v) for v in obj)
    return obj


def knet_loss_backward_s(model, batch: List[dict], device: torch.device, amp: str,
                         iters: int) -> float:
    """Seconds of the losses' backward alone: criterion inputs are leaves, backward stops there."""
    total = 0.0
    for _ in range(iters):
        with autocast(device, amp):
            images = model.preprocess_image(batch)
            with torch.no_grad():
                rpn, stages = model.forward_kernels(images)
            rpn, stages = _detach_tree(rpn), _detach_tree(stages)
            targets = model.prepare_targets(batch, images)
            losses = model.criterion(rpn, stages, targets)
        loss = sum(losses.values())
        synchronize(device)
        t0 = time.perf_counter()
        loss.backward()
        synchronize(device)
        total += time.perf_counter() - t0
    return total / iters


def prepare(key: str, args, device: torch.device, amp: str, batch: List[dict],
            memory_format: str = "nchw") -> Stepper:
    """Model (random weights, calibrated FrozenBN, train mode), optimizer and batch of ``key``;
    ``memory_format`` "channels_last" hooks its backbone as ``SOLVER.CHANNELS_LAST`` does."""
    torch.manual_seed(args.seed)
    cfg = build_cfg(key, args.device)
    model = build_model_from_cfg(cfg)
    if memory_format == "channels_last":
        train_in_channels_last(model)
    model_batch = batch if key.startswith("knet") else d2_batch(batch, key)
    model_batch = [{**x, "image": x["image"].to(device)} for x in model_batch]
    calibrate_frozen_bn(model, model_batch[:1])
    model.train()
    return Stepper(model, build_optimizer(key, cfg, model), model_batch, device, amp)


def run(args, argv: Sequence[str], print_fn: Callable[[str], None] = print) -> List[dict]:
    """Warm up every model, measure each one's peak memory over one step, then time the models
    taking turns step by step (K-Net with its loss-path timers installed)."""
    device = setup_run(args)
    apply_keep_freed_host_memory(args)
    header = run_header(argv, __spec__.name, args.device, args.threads)
    for line in environment(header):
        print_fn(line)
    batch = panoptic_batch(args.data_root, args.batch_size, args.min_size, args.max_size)
    desc = ", ".join(
        f"{tuple(x['image'].shape[-2:])} with {len(x['instances'])} segments" for x in batch
    )
    print_fn(f"batch: {len(batch)} coco_panoptic_sample images: {desc}")
    results = []
    with EventStorage(0):  # D2's models log training statistics there
        for amp in args.amp:
            results += measure_precision(args, device, amp, batch, print_fn)
    report(results, args, print_fn)
    if args.json is not None:
        record = {"argv": list(argv), **header, "results": results}
        write_json(args.json, record)
    return results


def measure_precision(args, device: torch.device, amp: str, batch: List[dict],
                      print_fn: Callable[[str], None]) -> List[dict]:
    """All models (in every ``--memory-formats`` layout) at one precision: warm-up (each K-Net's
    loss breakdown right after its warm-up, before the next model exists), one memory step
    each, interleaved timed steps."""
    steppers: Dict[str, Stepper] = {}
    breakdowns: Dict[str, Dict[str, float]] = {}
    variants = {f"{key}/{fmt}": (key, fmt) for key in args.models for fmt in args.memory_formats}
    for name, (key, fmt) in variants.items():
        step = steppers[name] = prepare(key, args, device, amp, batch, fmt)
        for _ in range(args.warmup):
            step()
        if key == "knet_panoptic":
            breakdowns[name] = knet_breakdown(step, device, amp, args.iters)
    memory = {}
    for name, step in steppers.items():
        with PeakMemory(device) as mem:
            step()
        memory[name] = mem
    seconds = time_interleaved(
        {k: (lambda i, s=s: s()) for k, s in steppers.items()}, list(range(args.iters)), device)
    results = []
    for name, step in steppers.items():
        (key, fmt), mem, sec = variants[name], memory[name], seconds[name]
        res: Dict[str, object] = {
            "model": key, "amp": amp, "memory_format": fmt, "s_per_step": sec,
            "img_per_s": len(batch) / sec, "peak_mib": mem.peak_mib, "extra_mib": mem.extra_mib,
            "mem_method": mem.method, "losses": step.losses(),
        }
        res.update(breakdowns.get(name, {}))
        results.append(res)
        print_fn(f"  measured {MODEL_NAMES[key]} {amp} {fmt}: {sec:.3g} s/step")
    return results


def knet_breakdown(step: Stepper, device: torch.device, amp: str, iters: int
                   ) -> Dict[str, float]:
    """K-Net's seconds per step in target preparation, matching, loss forward and backward.

    ``iters`` K-Net steps run alone (no other model in between, as in a real training run) with
    timers around ``prepare_targets``, ``match_stages`` and the criterion; the share
    is relative to these steps' own time. The losses' backward is timed separately.
    """
    timer = SectionTimer(device)
    timer.wrap(step.model, "prepare_targets", "targets")
    timer.wrap(step.model.criterion, "match_stages", "matching")
    timer.wrap(step.model.criterion, "forward", "criterion")
    try:
        sec = time_interleaved({"knet": lambda i: step()}, list(range(iters)), device)["knet"]
    finally:
        timer.restore()
    per = {k: v / iters for k, v in timer.totals.items()}
    out = {
        "breakdown_step_s": sec,
        "targets_s": per.get("targets", 0.0),
        "matching_s": per.get("matching", 0.0),
        "loss_fwd_s": per.get("criterion", 0.0) - per.get("matching", 0.0),
        "loss_bwd_s": knet_loss_backward_s(step.model, step.batch, device, amp, iters),
    }
    out["share"] = (out["targets_s"] + out["matching_s"] + out["loss_fwd_s"]
                    + out["loss_bwd_s"]) / sec
    return out


def report(results: List[dict], args, print_fn: Callable[[str], None] = print) -> None:
    def ms(r, k):
        return r[k] * 1000 if k in r else "-"

    rows = [
        [MODEL_NAMES[r["model"]], r["amp"], r["memory_format"], r["s_per_step"], r["img_per_s"],
         r["peak_mib"], r["extra_mib"], ms(r, "targets_s"), ms(r, "matching_s"),
         ms(r, "loss_fwd_s"), ms(r, "loss_bwd_s"), r.get("breakdown_step_s", "-"),
         f"{r['share'] * 100:.1f}%" if "share" in r else "-"]
        for r in results
    ]
    print_fn(f"\n## Training step results (batch {args.batch_size})\n")
    print_fn(format_table(
        ["model", "precision", "memory format", "s/step", "img/s", "peak MiB", "extra MiB",
         "targets ms", "matching ms", "loss fwd ms", "loss bwd ms", "alone s/step",
         "matching+losses share"], rows))
    print_fn("\nmemory (one step alone): " + "; ".join(sorted({r["mem_method"] for r in results})))
    ratio_rows = [*_knet_vs_d2_rows(results, args), *_channels_last_rows(results, args)]
    if ratio_rows:
        print_fn("\n## Ratios (same run)\n")
        print_fn(format_table(["precision", "ratio", "value", "target", "met"], ratio_rows))


def _find(results: List[dict], model: str, amp: str, fmt: str) -> Optional[dict]:
    return next((r for r in results if (r["model"], r["amp"], r["memory_format"])
                 == (model, amp, fmt)), None)


def _knet_vs_d2_rows(results: List[dict], args) -> List[list]:
    """K-Net against each D2 model (step time, memory) and K-Net's loss share, per precision
    and memory format."""
    rows = []
    for amp in args.amp:
        for fmt in args.memory_formats:
            knet = _find(results, "knet_panoptic", amp, fmt)
            if knet is None:
                continue
            tag = "" if args.memory_formats == ["nchw"] else f" ({fmt})"
            for other in ("mask_rcnn", "panoptic_fpn"):
                d = _find(results, other, amp, fmt)
                if d is None:
                    continue
                name = f"{MODEL_NAMES['knet_panoptic']} vs {MODEL_NAMES[other]}{tag}"
                rows.append([amp, f"{name}: step-time speed-up (D2 s/step / K-Net s/step)",
                             *fmt_ratio(d["s_per_step"] / knet["s_per_step"], None)])
                rows.append([amp, f"{name}: peak memory (extra) K-Net / D2",
                             *fmt_ratio(knet["extra_mib"] / max(d["extra_mib"], 1e-9), None)])
            share = knet["share"]
            rows.append([amp, f"K-Net{tag}: (targets + matching + losses fwd/bwd) / step, "
                              "K-Net alone",
                         f"{share * 100:.1f}%", f"<= {LOSS_SHARE_TARGET * 100:g}%",
                         "yes" if share <= LOSS_SHARE_TARGET else "**no**"])
    return rows


def _channels_last_rows(results: List[dict], args) -> List[list]:
    """Per model and precision: NCHW s/step / channels-last s/step (no target)."""
    rows = []
    for amp in args.amp:
        for model in args.models:
            nchw = _find(results, model, amp, "nchw")
            cl = _find(results, model, amp, "channels_last")
            if nchw is not None and cl is not None:
                rows.append([amp, f"{MODEL_NAMES[model]}: channels-last speed-up "
                                  "(NCHW s/step / channels-last s/step)",
                             *fmt_ratio(nchw["s_per_step"] / cl["s_per_step"], None)])
    return rows


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    main()
