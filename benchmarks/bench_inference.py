#!/usr/bin/env python
"""Inference speed and peak memory of K-Net vs Detectron2's own models, in one process run.

Models (random weights, FrozenBN statistics calibrated on the first image so that activations
are finite, see ``benchmarks.models.calibrate_frozen_bn``):

* K-Net R50 instance (``configs/coco/instance-segmentation/knet_R50_1x.yaml``) vs D2 Mask R-CNN
  R50-FPN and Cascade Mask R-CNN R50-FPN (model-zoo 3x configs);
* K-Net R50 panoptic (``configs/coco/panoptic-segmentation/knet_R50_1x.yaml``) vs D2
  PanopticFPN R50.

Inputs: the first ``--num-images`` coco_tiny val2017 images, resized by D2's test resize
(short side ``--min-size`` 800, long side <= ``--max-size`` 1333), at each of
``--batch-sizes`` (default 1; a batch is a list of consecutive images, cycled when there are
fewer images than the batch, see ``benchmarks.batching``); outputs at the original image size
(``height``/``width`` given), as in D2's evaluation.

Workload: D2's detectors keep ``TEST.DETECTIONS_PER_IMAGE 100`` with ``SCORE_THRESH_TEST 0``
(and the cascade's last stage, which reads the same key), the workload of a trained detector
(random weights would otherwise change how many detections survive); the table prints the mean
number of instances per image so that this can be checked. K-Net always returns its top 100.

Usage::

    python -m benchmarks.bench_inference --device cpu --threads 1 --num-images 3 --warmup 1
    python -m benchmarks.bench_inference --device cuda --amp none bf16 --channels-last \
        --compile --cuda-graphs --num-images 20 --warmup 5 --iters 5
    python -m benchmarks.bench_inference --device cpu --threads 2 --num-images 4 \
        --batch-sizes 1 2 4 8 --amp none bf16 --compile --user-options

Variants: ``eager`` (bf16 rows: the benchmark's autocast around the whole call), ``compile`` /
``cuda-graphs`` (the benchmark's own fast paths of ``forward_kernels``), and with
``--user-options`` ``options`` / ``options+compile``: a copy of the model through
``knet_d2.inference_options`` (``TEST.PRECISION`` / ``TEST.COMPILE``, what users get).

Timing: all models are built first; after the warm-up each model's peak memory is measured
over one call on the batch holding the largest image, then the models take turns call by call
(every timed call between two device synchronisations; batch sizes take turns pass by pass), so
that load changes of a shared machine hit all models alike. Prints the environment, one row per
(model, precision, variant, batch size), the ratios with their targets (GPU targets on cuda,
the CPU targets on cpu) and the ratios per batch size.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import batching
from .bench_lock import run_locked
from .cli import add_common_args, environment, refuse_existing, run_header, setup_run, write_json
from .data import coco_tiny_inputs, inputs_for
from .measure import PeakMemory, autocast, synchronize
from .models import D2_CONFIGS, MODEL_NAMES, build_cfg, build_model_from_cfg, calibrate_frozen_bn
from .report import count_outputs, fmt_ratio, format_table

INSTANCE_MODELS = ["knet_instance", "mask_rcnn", "cascade_mask_rcnn"]
PANOPTIC_MODELS = ["knet_panoptic", "panoptic_fpn"]
ALL_MODELS = INSTANCE_MODELS + PANOPTIC_MODELS

# (numerator, denominator, GPU target, CPU target): images/s ratios of the same run
RATIO_TARGETS = [
    ("knet_instance", "cascade_mask_rcnn", 2.0, batching.CPU_INSTANCE_TARGET),
    ("knet_instance", "mask_rcnn", 1.5, None),
    ("knet_panoptic", "panoptic_fpn", 1.5, batching.CPU_PANOPTIC_TARGET),
]
BF16_TARGET = 1.5  # K-Net bf16 / fp32 images/s on GPU
FAST_PATH_TARGET = 150.0  # img/s of K-Net R50 instance through compile / CUDA graphs on H100


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--num-images", type=int, default=3, help="coco_tiny val images")
    p.add_argument("--models", nargs="+", default=ALL_MODELS, choices=ALL_MODELS)
    p.add_argument("--compile", action="store_true",
                   help="also time K-Net with torch.compile on backbone + heads")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode of --compile (e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also time K-Net with backbone + heads replayed as CUDA graphs")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1],
                   help="images per model call, each in its own rows (default: 1)")
    p.add_argument("--user-options", action="store_true",
                   help="also time K-Net through knet_d2.inference_options (TEST.PRECISION / "
                        "TEST.COMPILE): 'options' rows per non-fp32 --amp, 'options+compile' "
                        "rows per --amp with --compile")
    p.add_argument("--profile", action="store_true",
                   help="print a torch.profiler table of one K-Net call per K-Net model")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.cuda_graphs and args.device != "cuda":
        p.error("--cuda-graphs needs --device cuda (CUDA graphs do not exist on the CPU)")
    refuse_existing(p, args, "json")
    if batching.check_batch_sizes(args.batch_sizes):
        p.error(batching.check_batch_sizes(args.batch_sizes))
    if min(args.num_images, args.iters) < 1 or args.warmup < 0:
        p.error("--num-images and --iters must be >= 1, --warmup >= 0")
    return args


# ---------------------------------------------------------------------------- fast K-Net paths
class CompiledKernels:
    """``KNet.forward_kernels`` through ``torch.compile`` (static shapes, one graph per
    padded input size); post-processing stays eager. Install with :meth:`install`."""

    def __init__(self, model, mode: str = "default"):
        import torch._dynamo
        from detectron2.structures import ImageList

        # one graph per padded input size: keep them all instead of falling back to eager
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self.model = model
        orig = model.forward_kernels

        def kernels(tensor: torch.Tensor):
            return orig(ImageList(tensor, [tuple(tensor.shape[-2:])] * tensor.shape[0]))

        self.fn = torch.compile(kernels, dynamic=False, mode=mode)

    def __call__(self, images):
        return self.fn(images.tensor)

    def install(self) -> None:
        self.model.forward_kernels = self

    def uninstall(self) -> None:
        del self.model.forward_kernels


class CudaGraphKernels:
    """``KNet.forward_kernels`` captured once per padded input shape as a CUDA graph.

    Backbone, neck, kernel head and update stages have static shapes for a given padded size and
    no host synchronisation, so they replay as one graph; the returned tensors are the graph's
    static outputs (valid until the next call), which post-processing consumes right away.
    Autocast runs with its weight cache disabled during capture, as graphs require.
    """

    def __init__(self, model, device: torch.device, amp: str):
        self.model = model
        self.device = device
        self.amp = amp
        self.orig = model.forward_kernels
        self.graphs: Dict[tuple, tuple] = {}

    def _capture(self, images):
        from detectron2.structures import ImageList

        static_in = images.tensor.clone()
        static_images = ImageList(static_in, list(images.image_sizes))
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), autocast(self.device, self.amp, cache_enabled=False):
            for _ in range(3):  # warm up cudnn / allocator outside the capture
                self.orig(static_images)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), autocast(self.device, self.amp, cache_enabled=False):
            static_out = self.orig(static_images)
        return graph, static_in, static_out

    def __call__(self, images):
        key = (tuple(images.tensor.shape), tuple(map(tuple, images.image_sizes)))
        if key not in self.graphs:
            self.graphs[key] = self._capture(images)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(images.tensor)
        graph.replay()
        return static_out

    def install(self) -> None:
        self.model.forward_kernels = self

    def uninstall(self) -> None:
        del self.model.forward_kernels


# ---------------------------------------------------------------------------- measurement
class Runner:
    """One measured configuration: ``runner(i)`` runs the model on call ``i``'s batch of
    ``batch_size`` images (:func:`benchmarks.batching.batch_indices`; batch 1: image ``i``).
    ``options`` variants get ``model`` already wrapped by ``knet_d2.inference_options`` and
    run it without the benchmark's autocast."""

    def __init__(self, key: str, model, inputs: List[dict], device: torch.device, amp: str,
                 variant: str, compile_mode: str = "default", batch_size: int = 1):
        self.key, self.model, self.inputs = key, model, inputs
        self.device, self.amp, self.variant = device, amp, variant
        self.batch_size = batch_size
        if variant == "eager" or variant in batching.USER_VARIANTS:
            self.path = None
        elif variant == "compile":
            self.path = CompiledKernels(model, compile_mode)
        else:
            self.path = CudaGraphKernels(model, device, amp)

    def __call__(self, i: int) -> list:
        if self.path is not None:
            self.path.install()
        try:
            batch = [self.inputs[j] for j in batching.batch_indices(
                i, self.batch_size, len(self.inputs))]
            amp = "none" if self.variant in batching.USER_VARIANTS else self.amp
            with torch.no_grad(), autocast(self.device, amp):
                return self.model(batch)
        finally:
            if self.path is not None:
                self.path.uninstall()


def profile_once(runner: Runner, name: str) -> None:
    """Print the top operators of one call (after the warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = runner.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, record_shapes=False) as prof:
        runner(0)
        synchronize(runner.device)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"\n### torch.profiler: {name}, {runner.amp}, {runner.variant}\n")
    print(prof.key_averages().table(sort_by=key, row_limit=25))


def output_agreement(out: dict, ref: dict) -> Dict[str, float]:
    """How far one K-Net output (one image) is from the fp32 eager output of the same model.

    Instance: the largest absolute score difference, the fraction of the top-100 pairs with the
    same class, the fraction of mask pixels that differ. Panoptic: the fraction of pixels whose
    segment id differs.
    """
    res: Dict[str, float] = {}
    if "instances" in ref and "instances" in out:
        a, b = out["instances"].to("cpu"), ref["instances"].to("cpu")
        if len(a) != len(b):
            raise ValueError(f"{len(a)} instances vs {len(b)} in the fp32 eager output")
        if len(b):
            res["score_max_abs_diff"] = float((a.scores.float() - b.scores.float()).abs().max())
            res["same_class"] = float((a.pred_classes == b.pred_classes).float().mean())
            res["mask_px_differ"] = float((a.pred_masks != b.pred_masks).float().mean())
    if "panoptic_seg" in ref and "panoptic_seg" in out:
        a, b = out["panoptic_seg"][0].cpu(), ref["panoptic_seg"][0].cpu()
        res["panoptic_px_differ"] = float((a != b).float().mean())
    return res


def check_agreement(runners: Dict[str, Runner]) -> Dict[str, Dict[str, float]]:
    """Run every K-Net runner that is not fp32 eager on image 0 and compare its output with
    the fp32 eager runner of the same model (absent from the run: not compared)."""
    refs = {r.key: r(0)[0] for r in runners.values()
            if r.key.startswith("knet") and (r.amp, r.variant) == ("none", "eager")}
    return {name: output_agreement(r(0)[0], refs[r.key]) for name, r in runners.items()
            if r.key in refs and (r.amp, r.variant) != ("none", "eager")}


def variants_for(key: str, args, amp: str = "none") -> List[str]:
    out = ["eager"]
    if key.startswith("knet"):
        if args.compile:
            out.append("compile")
        if args.cuda_graphs:
            out.append("cuda-graphs")
        if args.user_options and amp != "none":
            out.append("options")
        if args.user_options and args.compile:
            out.append("options+compile")
    return out


def run(args, argv: Sequence[str], print_fn: Callable[[str], None] = print) -> List[dict]:
    """Build every model, warm up, measure memory per model, then time them taking turns."""
    device = setup_run(args)
    header = run_header(argv, __spec__.name, args.device, args.threads)
    for line in environment(header):
        print_fn(line)
    images = coco_tiny_inputs(args.data_root, args.num_images, args.min_size, args.max_size)
    sizes = [tuple(x["image"].shape[-2:]) for x in images]
    print_fn(f"inputs: {len(images)} coco_tiny val2017 images, batch sizes "
             f"{args.batch_sizes}, resized sizes {sorted(set(sizes))}")
    runners: Dict[str, Runner] = {}
    for key in args.models:
        torch.manual_seed(args.seed)
        model = build_model_from_cfg(build_cfg(key, args.device), args.channels_last)
        inputs = inputs_for(key, images, device, args.channels_last)
        calibrate_frozen_bn(model, inputs[:1])
        for amp in args.amp:
            for variant in variants_for(key, args, amp):
                wrapped = model if variant not in batching.USER_VARIANTS else \
                    batching.user_options_model(model, amp, variant == "options+compile")
                for bs in args.batch_sizes:
                    runners[f"{key}|{amp}|{variant}|{bs}"] = Runner(
                        key, wrapped, inputs, device, amp, variant, args.compile_mode, bs)
    # warm-up; fast paths need one call per distinct input shape (compile / capture); the
    # benchmark's compile runners first, so that the graph count is theirs alone
    compiled = [r for r in runners.values() if r.variant == "compile"]
    for runner in compiled + [r for r in runners.values() if r.variant != "compile"]:
        passes = batching.calls_per_pass(len(images), runner.batch_size)
        fast = runner.path is not None or runner.variant == "options+compile"
        for i in range(max(args.warmup, passes) if fast else args.warmup):
            runner(i)
        if compiled and runner is compiled[-1]:
            from torch._dynamo.utils import counters

            graphs = counters["stats"]["unique_graphs"]
            combos = batching.compile_combinations(compiled, len(images))
            print_fn(f"torch.compile: {graphs} graphs for {combos} (model, precision, batch, "
                     f"padded size) combinations "
                     f"({'no graph breaks' if graphs == combos else 'graph breaks'})")
    first = args.batch_sizes[0]
    agreement = check_agreement({n: r for n, r in runners.items() if r.batch_size == first})
    # peak memory: one call per runner on the batch holding the largest image, alone
    largest = max(range(len(images)), key=lambda i: sizes[i][0] * sizes[i][1])
    memory = {}
    for name, runner in runners.items():
        with PeakMemory(device) as mem:
            runner(largest // runner.batch_size)
        memory[name] = mem
    counts: Dict[str, List[dict]] = {name: [] for name in runners}
    seconds = batching.time_batch_sizes(
        runners, {n: r.batch_size for n, r in runners.items()}, len(images), args.iters,
        device, on_result=lambda name, out: counts[name].extend(out),
    )
    results = []
    for name, runner in runners.items():
        mem = memory[name]
        results.append({
            "model": runner.key, "amp": runner.amp, "variant": runner.variant,
            "batch_size": runner.batch_size, "s_per_batch": seconds[name],
            "s_per_img": seconds[name] / runner.batch_size,
            "img_per_s": runner.batch_size / seconds[name],
            "peak_mib": mem.peak_mib, "extra_mib": mem.extra_mib, "mem_method": mem.method,
            **count_outputs(counts[name]),
            "agreement_with_fp32_eager": agreement.get(name),
        })
    if args.profile:
        for runner in runners.values():
            if runner.key.startswith("knet") and runner.batch_size == first:
                profile_once(runner, MODEL_NAMES[runner.key])
    report(results, args, print_fn)
    tables = batching.report_batches(results, args.device, print_fn)
    if args.json is not None:
        record = {"argv": list(argv), **header, "batch_sizes": args.batch_sizes,
                  "results": results, **tables}
        write_json(args.json, record)
    return results


def report(results: List[dict], args, print_fn: Callable[[str], None] = print) -> None:
    """Print the results table (all batch sizes) and the ratio table (first batch size)."""
    gpu = args.device == "cuda"
    rows = [
        [MODEL_NAMES[r["model"]], r["amp"], r["variant"], r["batch_size"], r["img_per_s"],
         r["s_per_img"] * 1000, r["peak_mib"], r["extra_mib"],
         r.get("instances", "-"), r.get("segments", "-")]
        for r in results
    ]
    print_fn("\n## Inference results\n")
    print_fn(format_table(
        ["model", "precision", "variant", "batch", "img/s", "ms/img", "peak MiB", "extra MiB",
         "instances/img", "segments/img"], rows))
    methods = sorted({r["mem_method"] for r in results})
    print_fn(f"\nmemory (one call on the largest image): {'; '.join(methods)}")
    bad = [r for r in results if r["model"] in D2_CONFIGS and r.get("instances") != 100]
    if bad:
        print_fn("WARNING: D2 models below the forced 100 detections/image: "
                 + ", ".join(f"{MODEL_NAMES[r['model']]} {r['instances']}" for r in bad))
    elif any(r["model"] in D2_CONFIGS for r in results):
        print_fn("workload check: every D2 model returned 100 instances per image")

    first = args.batch_sizes[0]

    def _find(results, key, amp, variant="eager"):
        return batching.find(results, key, amp, variant, first)

    agree = [r for r in results if r.get("agreement_with_fp32_eager")]
    if agree:
        print_fn("\n## Output agreement with fp32 eager (image 0)\n")
        keys = ["score_max_abs_diff", "same_class", "mask_px_differ", "panoptic_px_differ"]
        print_fn(format_table(
            ["model", "precision", "variant", "max |score diff|", "same class",
             "mask pixels differ", "panoptic pixels differ"],
            [[MODEL_NAMES[r["model"]], r["amp"], r["variant"],
              *(f"{r['agreement_with_fp32_eager'][k]:.3g}"
                if k in r["agreement_with_fp32_eager"] else "-" for k in keys)]
             for r in agree]))

    ratio_rows = []
    for amp in args.amp:
        for num, den, gpu_t, cpu_t in RATIO_TARGETS:
            target = gpu_t if gpu else cpu_t
            d = _find(results, den, amp)
            for variant in ("eager", "compile", "cuda-graphs", *batching.USER_VARIANTS):
                n = _find(results, num, amp, variant)
                if n is None or d is None:
                    continue
                label = f"{MODEL_NAMES[num]} ({variant}) / {MODEL_NAMES[den]} (eager)"
                ratio_rows.append([amp, label, *fmt_ratio(
                    n["img_per_s"] / d["img_per_s"], target)])
    fp32 = "none"
    for amp in [a for a in args.amp if a != fp32]:
        for key in ("knet_instance", "knet_panoptic"):
            lo, hi = _find(results, key, fp32), _find(results, key, amp)
            if lo is not None and hi is not None:
                ratio_rows.append([amp, f"{MODEL_NAMES[key]}: {amp} / fp32 img/s",
                                   *fmt_ratio(hi["img_per_s"] / lo["img_per_s"],
                                                 BF16_TARGET if gpu else None)])
    for r in results:
        if (r["model"], r["batch_size"]) == ("knet_instance", first) and r["variant"] != "eager":
            ratio_rows.append([r["amp"], f"{MODEL_NAMES[r['model']]} ({r['variant']}) img/s",
                               f"{r['img_per_s']:.1f}",
                               f">= {FAST_PATH_TARGET:g} (H100)" if gpu else "-",
                               ("yes" if r["img_per_s"] >= FAST_PATH_TARGET else "**no**")
                               if gpu else "-"])
    for amp in args.amp:
        for num, den, _, _ in RATIO_TARGETS:
            n, d = _find(results, num, amp), _find(results, den, amp)
            if n is not None and d is not None:
                ratio_rows.append([amp, f"peak memory (extra) {MODEL_NAMES[num]} / "
                                   f"{MODEL_NAMES[den]}",
                                   f"{n['extra_mib'] / max(d['extra_mib'], 1e-9):.2f}", "-", "-"])
    if ratio_rows:
        print_fn(f"\n## Ratios (same run, batch {first}; {'GPU' if gpu else 'CPU'} targets)\n")
        print_fn(format_table(["precision", "ratio", "value", "target", "met"], ratio_rows))


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    main()
