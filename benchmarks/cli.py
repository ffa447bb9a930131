"""What the benchmark scripts share on their command line: the common arguments, the data root,
the run set-up (threads, seed, precision defaults, TF32 off) and the run header (date, commit,
machine, command) printed before the results and stored in their JSON.

The data root (``--data-root``) is the folder holding ``coco_tiny/`` and
``coco_panoptic_sample/``. Its default follows Detectron2's ``$DETECTRON2_DATASETS``
convention: ``$KNET_BENCH_DATA`` if set, else ``$DETECTRON2_DATASETS``, else ``datasets``
(relative to the working directory, the repository root).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import torch

from knet_d2.collect_env import machine_line
from knet_d2.engine.host_memory import keep_freed_host_memory

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


def apply_keep_freed_host_memory(args: argparse.Namespace) -> None:
    """``--keep-freed-host-memory``: make glibc's malloc keep freed memory for this whole process
    (``KEEP_FREED_HOST_MEMORY``) before anything is measured; a C library that refuses it stops
    the run instead of measuring without it."""
    if args.keep_freed_host_memory and not keep_freed_host_memory():
        raise SystemExit("--keep-freed-host-memory: the C library refused it (see the warning)")


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


def refuse_existing(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    *options: str) -> None:
    """``parser.error`` when the path of an output option (``"json"`` for ``--json``) already
    exists: a benchmark never overwrites an earlier run's results."""
    for option in options:
        path = getattr(args, option)
        if path is not None and Path(path).exists():
            parser.error(f"--{option.replace('_', '-')} {path} already exists; "
                         "not overwriting it")


def write_json(path: Path, record: Mapping[str, object]) -> None:
    """Write a run's record (header and results) as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def run_header(argv: Sequence[str], module: str, device: str, threads: int) -> Dict[str, str]:
    """What a result needs to be reproduced: date, commit, machine (one line of
    ``python -m knet_d2.collect_env --short``), device and torch threads, and the exact command
    (``python -m module argv...``). Printed before the results and stored in their JSON."""
    dev = f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" else device
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_line(),
        "device": f"{dev}, torch threads {threads}",
        "command": "python -m " + " ".join([module, *argv]),
    }


def environment(header: Dict[str, str]) -> List[str]:
    """The lines printed before the results: ``key: value`` of :func:`run_header`."""
    return [f"{key}: {value}" for key, value in header.items()]


def git_commit() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes to tracked files), or
    ``unknown`` outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")
