"""Shared helpers of ``bench_inference.py`` and ``bench_train.py``.

* model construction: K-Net from this project's COCO configs, Detectron2's Mask R-CNN, Cascade
  Mask R-CNN and PanopticFPN from D2's model-zoo configs, all with random weights (no download);
* :func:`calibrate_frozen_bn`: data-dependent statistics for the FrozenBN layers, so that random
  R50 weights give finite activations (with identity FrozenBN the activations of a random R50
  overflow, D2's box heads then drop the non-finite detections and the workload is not the
  one of a trained model);
* real COCO inputs: ``coco_tiny`` val images and the ``coco_panoptic_sample`` images with their
  panoptic annotations, resized like D2's test/train resize;
* timing (device-synchronised, the models taking turns call by call) and peak-memory
  measurement on CUDA and on the CPU;
* environment description and plain-text tables.

CPU peak memory: Linux ``/proc/self/clear_refs`` (writing ``5`` resets the peak resident set
size ``VmHWM``) after ``malloc_trim(0)``; the figure is ``VmHWM`` after the measured calls
minus ``VmRSS`` before them, i.e. the extra resident memory the calls needed. Where that file
cannot be written the monotone ``ru_maxrss`` delta of ``resource.getrusage`` is used and the
table says so.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: D2 model-zoo configs of the reference models.
D2_CONFIGS = {
    "mask_rcnn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
    "cascade_mask_rcnn": "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml",
    "panoptic_fpn": "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x.yaml",
}
#: K-Net configs of this project.
KNET_CONFIGS = {
    "knet_instance": "configs/coco/instance-segmentation/knet_R50_1x.yaml",
    "knet_panoptic": "configs/coco/panoptic-segmentation/knet_R50_1x.yaml",
}
#: display names
MODEL_NAMES = {
    "knet_instance": "K-Net R50 instance",
    "knet_panoptic": "K-Net R50 panoptic",
    "mask_rcnn": "D2 Mask R-CNN R50-FPN",
    "cascade_mask_rcnn": "D2 Cascade Mask R-CNN R50-FPN",
    "panoptic_fpn": "D2 PanopticFPN R50",
}
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------- CLI helpers
def add_common_args(parser) -> None:
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
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA,
                        help="folder with coco_tiny/ and coco_panoptic_sample/")


def setup_run(args) -> torch.device:
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
    for name in ("coco_tiny", "coco_panoptic_sample"):
        if not (args.data_root / name).is_dir():
            raise SystemExit(f"--data-root {args.data_root}: folder {name}/ not found")
    return torch.device(args.device)


def environment(args, argv: Sequence[str], script: str) -> List[str]:
    """Lines describing the run: date, device, versions, command."""
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
        "command: python benchmarks/" + " ".join([script] + list(argv)),
    ]


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        return m.group(1).strip() if m else platform.processor()
    except OSError:
        return platform.processor() or "unknown"


# ---------------------------------------------------------------------------- models
def knet_cfg(key: str, device: str, opts: Sequence[str] = ()):
    """The K-Net config of ``key`` with random weights (``MODEL.WEIGHTS ""``)."""
    from knet_d2 import get_knet_cfg

    cfg = get_knet_cfg(
        str(REPO_ROOT / KNET_CONFIGS[key]),
        ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device, *opts],
        freeze=False,
    )
    return cfg


def d2_config_file(name: str) -> str:
    """``detectron2.model_zoo.get_config_file(name)``; where ``detectron2.model_zoo`` does not
    import (it needs ``pkg_resources``, gone from setuptools >= 81) the same file is taken
    from the installed package's ``model_zoo/configs`` folder."""
    try:
        from detectron2 import model_zoo
    except ImportError:
        import detectron2

        path = Path(detectron2.__file__).parent / "model_zoo" / "configs" / name
        if not path.is_file():
            raise FileNotFoundError(f"D2 model-zoo config not found: {path}") from None
        return str(path)
    return model_zoo.get_config_file(name)


def d2_cfg(key: str, device: str, opts: Sequence[str] = ()):
    """A D2 model-zoo config with random weights, 100 detections, score threshold 0."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(d2_config_file(D2_CONFIGS[key]))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", device,
        # the workload of a trained detector: always 100 detections per image
        "TEST.DETECTIONS_PER_IMAGE", "100", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        *opts,
    ])
    return cfg


def build_cfg(key: str, device: str, opts: Sequence[str] = ()):
    return knet_cfg(key, device, opts) if key.startswith("knet") else d2_cfg(key, device, opts)


def build_model_from_cfg(cfg, channels_last: bool = False) -> nn.Module:
    """``detectron2.modeling.build_model`` (+ channels_last), in eval mode."""
    from detectron2.modeling import build_model

    import knet_d2  # noqa: F401  (registers KNet)

    model = build_model(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


@torch.no_grad()
def calibrate_frozen_bn(model: nn.Module, batched_inputs: List[dict]) -> int:
    """Set every ``FrozenBatchNorm2d`` of ``model`` to normalise its input of one forward pass.

    Pre-hooks set ``running_mean`` / ``running_var`` to the per-channel mean / variance of the
    layer's input (weight 1, bias 0) before the layer runs, so the next layers already see the
    calibrated outputs. Turns random R50 weights into finite, trained-like activation scales.

    Returns:
        the number of calibrated layers.
    """
    from detectron2.layers import FrozenBatchNorm2d

    layers = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]

    def hook(module, inputs):
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)).clamp(min=1e-3))
        module.weight.fill_(1.0)
        module.bias.zero_()

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        model(batched_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return len(layers)


def input_format(model_key: str) -> str:
    """``INPUT.FORMAT`` of a model: K-Net configs are RGB, D2 model-zoo ones BGR."""
    return "RGB" if model_key.startswith("knet") else "BGR"


def to_format(image: torch.Tensor, fmt: str) -> torch.Tensor:
    """(3, H, W) RGB tensor -> the model's channel order."""
    return image.flip(0).contiguous() if fmt == "BGR" else image


# ---------------------------------------------------------------------------- data
def resize_shortest_edge(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """D2's test-time ``ResizeShortestEdge(min_size, max_size)`` of an (H, W, 3) uint8 array."""
    from detectron2.data import transforms as T

    return T.ResizeShortestEdge(min_size, max_size).get_transform(image).apply_image(image)


def coco_tiny_inputs(data_root: Path, num_images: int, min_size: int, max_size: int
                     ) -> List[dict]:
    """The first ``num_images`` val2017 images of coco_tiny (sorted by name), as RGB inputs.

    Returns:
        dicts with ``image`` (3, h, w) uint8 RGB (resized), ``height`` / ``width`` (original
        size, the size the models return their outputs at) and ``file_name``.
    """
    from detectron2.data import detection_utils as utils

    folder = data_root / "coco_tiny" / "val2017"
    files = sorted(folder.glob("*.jpg"))[:num_images]
    if len(files) < num_images:
        raise SystemExit(f"{folder}: only {len(files)} images, --num-images {num_images}")
    out = []
    for f in files:
        img = utils.read_image(str(f), format="RGB")
        resized = resize_shortest_edge(img, min_size, max_size)
        out.append({
            "image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
            "height": img.shape[0],
            "width": img.shape[1],
            "file_name": str(f),
        })
    return out


def inputs_for(model_key: str, inputs: List[dict], device: torch.device,
               channels_last: bool = False) -> List[dict]:
    """Copies of ``inputs`` in the model's channel order, already on ``device``."""
    fmt = input_format(model_key)
    out = []
    for x in inputs:
        img = to_format(x["image"], fmt).to(device)
        if channels_last:
            img = img[None].contiguous(memory_format=torch.channels_last)[0]
        out.append({**x, "image": img})
    return out


# ---------------------------------------------------------------------------- measurement
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, amp: str, cache_enabled: bool = True):
    """``torch.autocast`` for ``amp`` in {bf16, fp16}; a no-op context for ``none``."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)


def _proc_status_kib(key: str) -> Optional[int]:
    try:
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Context manager measuring the peak memory of the calls inside it, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; ``peak_mib``
    is the absolute peak of allocated tensors (weights included), ``extra_mib`` the peak above
    the memory allocated on entry. CPU: see the module docstring (``method`` tells which);
    ``peak_mib`` is then the process's peak RSS and ``extra_mib`` its increase.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = float("nan")
        self.extra_mib = float("nan")
        self.method = ""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        else:
            _malloc_trim()
            if _reset_peak_rss() and _proc_status_kib("VmRSS") is not None:
                self._base = _proc_status_kib("VmRSS") * 1024
                self.method = "peak RSS increase (/proc/self/clear_refs + VmHWM)"
            else:
                self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                self.method = "ru_maxrss increase (monotone: 0 if below an earlier peak)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("peak RSS"):
            peak = (_proc_status_kib("VmHWM") or 0) * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_mib = peak / 2**20
        self.extra_mib = max(peak - self._base, 0) / 2**20


def time_interleaved(
    runners: Dict[str, Callable[[int], object]], calls: Sequence[int], device: torch.device,
    on_result: Optional[Callable[[str, object], None]] = None,
) -> Dict[str, float]:
    """Mean seconds per call of every runner, the runners taking turns call by call.

    For each ``i`` in ``calls`` every runner runs ``fn(i)`` once, timed alone between two
    device synchronisations. Taking turns spreads the load changes of a shared machine over all
    runners alike, so the ratios of one run stay meaningful when the absolute times are noisy.
    ``on_result(name, result)`` sees every result (outside the timed region).
    """
    totals = {name: 0.0 for name in runners}
    for i in calls:
        for name, fn in runners.items():
            synchronize(device)
            t0 = time.perf_counter()
            out = fn(i)
            synchronize(device)
            totals[name] += time.perf_counter() - t0
            if on_result is not None:
                on_result(name, out)
    return {name: t / max(len(calls), 1) for name, t in totals.items()}


class SectionTimer:
    """Accumulates the wall time of named code sections (device-synchronised on CUDA).

    ``wrap(obj, "method", "name")`` replaces ``obj.method`` by a timed wrapper (an instance
    attribute, so nothing changes for other instances); :meth:`restore` puts the originals
    back. Nothing is patched unless a benchmark asks, so the model has no timing overhead
    otherwise.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.totals: Dict[str, float] = {}
        self.counts: Dict[str, int] = {}
        self._patched: List[Tuple[object, str]] = []

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0
            self.counts[name] = self.counts.get(name, 0) + 1

    def wrap(self, obj: object, attr: str, name: str) -> None:
        orig = getattr(obj, attr)

        def timed(*args, **kwargs):
            with self.section(name):
                return orig(*args, **kwargs)

        setattr(obj, attr, timed)
        self._patched.append((obj, attr))

    def restore(self) -> None:
        for obj, attr in reversed(self._patched):
            with contextlib.suppress(AttributeError):
                delattr(obj, attr)
        self._patched.clear()

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()


# ---------------------------------------------------------------------------- output
def count_outputs(outputs: List[dict]) -> Dict[str, float]:
    """Mean number of instances and of panoptic segments per image of a model's outputs."""
    inst = [len(o["instances"]) for o in outputs if "instances" in o]
    segs = [len(o["panoptic_seg"][1]) for o in outputs if "panoptic_seg" in o]
    res = {}
    if inst:
        res["instances"] = float(np.mean(inst))
    if segs:
        res["segments"] = float(np.mean(segs))
    return res


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_ratio(value: float, target: Optional[float]) -> Tuple[str, str, str]:
    """(ratio, target, met) cells."""
    if target is None:
        return f"{value:.2f}", "-", "-"
    return f"{value:.2f}", f">= {target:g}", "yes" if value >= target else "**no**"
