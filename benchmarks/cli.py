"""What the benchmark scripts share on their command line: the common arguments, the data root,
the run set-up (threads, seed, precision defaults, TF32 off) and the environment lines printed
before the results.

The data root (``--data-root``) is the folder holding ``coco_tiny/`` and
``coco_panoptic_sample/``. Its default follows Detectron2's ``$DETECTRON2_DATASETS``
convention: ``$KNET_BENCH_DATA`` if set, else ``$DETECTRON2_DATASETS``, else ``datasets``
(relative to the working directory, the repository root).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch

from .measure import AMP_DTYPES

#: environment variable naming the benchmarks' data root (before ``$DETECTRON2_DATASETS``)
DATA_ROOT_ENV = "KNET_BENCH_DATA"
#: folders the data root must hold
DATA_FOLDERS = ("coco_tiny", "coco_panoptic_sample")


def default_data_root() -> Path:
    """``$KNET_BENCH_DATA``, else ``$DETECTRON2_DATASETS``, else ``datasets``."""
    root = os.environ.get(DATA_ROOT_ENV) or os.environ.get("DETECTRON2_DATASETS") or "datasets"
    return Path(os.path.expanduser(root))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by both benchmark scripts."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", nargs="+", default=None, choices=list(AMP_DTYPES),
                        help="precisions to measure, each in its own rows (default: none on "
                             "cpu, none + bf16 on cuda)")
    parser.add_argument("--channels-last", action="store_true",
                        help="models and inputs in channels_last memory format")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per model first")
    parser.add_argument("--iters", type=int, default=1,
                        help="timed passes (inference: over all images; training: steps)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: cores - 1; use 1 on a 2-core machine)")
    parser.add_argument("--min-size", type=int, default=800, help="short side of the inputs")
    parser.add_argument("--max-size", type=int, default=1333, help="long-side cap of the inputs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--data-root", type=Path, default=default_data_root(),
                        help="folder with coco_tiny/ and coco_panoptic_sample/ (default: "
                             f"${DATA_ROOT_ENV}, else $DETECTRON2_DATASETS, else datasets)")


def setup_run(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` / ``--seed``, check ``--device`` and fill ``--amp``'s default."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False on this machine")
    threads = args.threads if args.threads else max((os.cpu_count() or 2) - 1, 1)
    torch.set_num_threads(threads)
    args.threads = threads
    torch.manual_seed(args.seed)
    if args.amp is None:
        args.amp = ["none"] if args.device == "cpu" else ["none", "bf16"]
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are real fp32
        torch.backends.cudnn.allow_tf32 = False
    for name in DATA_FOLDERS:
        if not (args.data_root / name).is_dir():
            raise SystemExit(
                f"--data-root {args.data_root}: folder {name}/ not found (pass --data-root or "
                f"set ${DATA_ROOT_ENV} to the folder holding {' and '.join(DATA_FOLDERS)})"
            )
    return torch.device(args.device)


def environment(args: argparse.Namespace, argv: Sequence[str], module: str) -> List[str]:
    """Lines describing the run: date, device, versions, command (``python -m module ...``)."""
    import detectron2

    if args.device == "cuda":
        dev = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    else:
        dev = f"CPU {_cpu_model()} ({os.cpu_count()} cores visible)"
    return [
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"device: {dev}, torch threads {args.threads}",
        f"versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"detectron2 {detectron2.__version__}, numpy {np.__version__}",
        "command: python -m " + " ".join([module, *argv]),
    ]


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        return m.group(1).strip() if m else platform.processor()
    except OSError:
        return platform.processor() or "unknown"
