#!/usr/bin/env python
"""Bilinear resizing on the CPU: PyTorch's kernel against the matrix form of
:func:`knet_d2.modeling.resize.bilinear_resize`, alone and inside a training step.

Two parts, each timing both forms in one process, taking turns call by call
(:func:`benchmarks.measure.time_interleaved`):

1. **The resize alone**, on the shapes the synthetic 128-px models resize in training (batch 8:
   semantic logits to the label size x4, masks x2 and /2, neck and UPerNet maps x2): forward +
   backward and forward alone (no autograd), float32 and bfloat16. ``kernel`` is
   ``F.interpolate(x, size, mode="bilinear", align_corners=False)``, ``matrix`` is
   ``bilinear_resize`` (which takes its matrix form for these sizes on the CPU).
2. **A training step** of each ``--config-file`` (default: the three 10-minute synthetic
   recipes): forward under the config's ``SOLVER.AMP``, backward, the config's optimizer step;
   the same pre-loaded batches for both forms (data loading is not timed). ``kernel`` runs the
   step with the matrix form switched off (``bilinear_resize`` falls back to F.interpolate for
   every call), ``matrix`` as the product runs it. ``KEEP_FREED_HOST_MEMORY`` of the first
   config is applied to the whole process first, as ``train_net.py`` would.

Needs the configs' training data (``$DETECTRON2_DATASETS``; the 16 000-image synthetic split is
generated on first use, datasets/README.md). Usage::

    DETECTRON2_DATASETS=output/d2data python -m benchmarks.bench_resize \\
        --json output/bench_resize.json
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.utils.events import EventStorage

from knet_d2.engine.defaults import get_knet_cfg
from knet_d2.engine.host_memory import keep_freed_host_memory
from knet_d2.engine.mixed_precision import AMP_PRECISIONS
from knet_d2.engine.trainer import Trainer
from knet_d2.modeling import resize

from .bench_lock import run_locked
from .cli import environment, refuse_existing, run_header, write_json
from .measure import time_interleaved
from .report import format_table

RECIPES = (
    "configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml",
    "configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml",
    "configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml",
)
#: (input shape, output size) of the resizes the synthetic models run in training
SHAPES = (
    ((8, 8, 32, 32), (128, 128)),  # semantic: stage logits to the label size
    ((8, 20, 16, 16), (32, 32)),  # kernel-update heads: masks stride 8 -> 4
    ((8, 20, 32, 32), (16, 16)),  # masks back to the grouping features' size
    ((8, 64, 16, 16), (32, 32)),  # neck / UPerNet top-down x2
    ((8, 64, 32, 32), (64, 64)),  # a larger map x2
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@contextlib.contextmanager
def kernel_only() -> Iterator[None]:
    """Within the block, ``bilinear_resize`` uses F.interpolate for every call."""
    original = resize._matrices
    resize._matrices = lambda x, size: None
    try:
        yield
    finally:
        resize._matrices = original


def _kernel(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _resize_call(fn: Callable, x: torch.Tensor, size, grad_out: torch.Tensor,
                 mode: str) -> Callable[[int], None]:
    """One timed call of ``fn(x, size)``: with its backward, or without autograd."""
    if mode == "forward":
        def call(_: int) -> None:
            with torch.no_grad():
                fn(x, size)
    else:
        def call(_: int) -> None:
            fn(x, size).backward(grad_out)
    return call


def measure_resizes(iters: int) -> List[dict]:
    """ms per call of both forms for every shape, dtype and mode (with / without autograd)."""
    rows = []
    for (shape, size), (dname, dtype) in itertools.product(SHAPES, DTYPES.items()):
        x = torch.randn(*shape, dtype=dtype, requires_grad=True)
        grad_out = torch.randn(shape[:2] + size, dtype=dtype)
        assert resize._matrices(x, size) is not None, (shape, size, dtype)
        for mode in ("forward+backward", "forward"):
            runners = {name: _resize_call(fn, x, size, grad_out, mode)
                       for name, fn in (("kernel", _kernel), ("matrix", resize.bilinear_resize))}
            time_interleaved(runners, range(3), torch.device("cpu"))  # warm-up
            seconds = time_interleaved(runners, range(iters), torch.device("cpu"))
            rows.append({"shape": list(shape), "size": list(size), "dtype": dname, "mode": mode,
                         "kernel_ms": seconds["kernel"] * 1e3,
                         "matrix_ms": seconds["matrix"] * 1e3,
                         "speedup": seconds["kernel"] / seconds["matrix"]})
    return rows


def measure_training_step(config_file: str, warmup: int, iters: int) -> dict:
    """Mean seconds per training step of ``config_file`` with the kernel and the matrix form."""
    cfg = get_knet_cfg(config_file, [])
    torch.manual_seed(cfg.SEED)
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    loader = iter(Trainer.build_train_loader(cfg))
    batches = [next(loader) for _ in range(warmup + iters)]
    dtype = AMP_PRECISIONS[cfg.SOLVER.AMP.PRECISION] if cfg.SOLVER.AMP.ENABLED else None
    model.train()

    def step(i: int) -> None:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            losses = model(batches[i])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    def kernel_step(i: int) -> None:
        with kernel_only():
            step(i)

    runners = {"kernel": kernel_step, "matrix": step}
    with EventStorage(0):
        time_interleaved(runners, range(warmup), torch.device("cpu"))
        seconds = time_interleaved(runners, range(warmup, warmup + iters), torch.device("cpu"))
    return {"config_file": config_file, "amp": cfg.SOLVER.AMP.PRECISION if dtype else "none",
            "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH, "steps": iters,
            "kernel_s": seconds["kernel"], "matrix_s": seconds["matrix"],
            "speedup": seconds["kernel"] / seconds["matrix"]}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", nargs="+", default=list(RECIPES),
                        help="training configs whose step is timed (default: the 10-minute "
                             "synthetic recipes)")
    parser.add_argument("--resize-iters", type=int, default=50,
                        help="timed calls per resize shape, dtype and mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps per form")
    parser.add_argument("--iters", type=int, default=40, help="timed training steps per form")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, as train_net.py runs)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    refuse_existing(parser, args, "json")
    return args


def run(args: argparse.Namespace, argv: Sequence[str],
        print_fn: Callable[[str], None] = print) -> Dict[str, object]:
    if args.threads:
        torch.set_num_threads(args.threads)
    if get_knet_cfg(args.config_file[0], []).KEEP_FREED_HOST_MEMORY:
        keep_freed_host_memory()
    header = run_header(argv, __spec__.name, "cpu", torch.get_num_threads())
    for line in environment(header):
        print_fn(line)
    resizes = measure_resizes(args.resize_iters)
    print_fn("\n## Bilinear resize alone (ms per call)\n")
    print_fn(format_table(
        ["input", "output", "dtype", "mode", "kernel ms", "matrix ms", "kernel / matrix"],
        [[tuple(r["shape"]), tuple(r["size"]), r["dtype"], r["mode"], r["kernel_ms"],
          r["matrix_ms"], r["speedup"]] for r in resizes]))
    steps = []
    for config_file in args.config_file:
        steps.append(measure_training_step(config_file, args.warmup, args.iters))
        print_fn(f"timed: {config_file}")
    print_fn("\n## Training step (s per step, data loading not included)\n")
    print_fn(format_table(
        ["config", "amp", "batch", "steps", "kernel s", "matrix s", "kernel / matrix"],
        [[Path(r["config_file"]).name, r["amp"], r["ims_per_batch"], r["steps"], r["kernel_s"],
          r["matrix_s"], r["speedup"]] for r in steps]))
    record = {"argv": list(argv), **header, "resizes": resizes, "training_steps": steps}
    if args.json is not None:
        write_json(args.json, record)
    return record


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    main()
