#!/usr/bin/env python
"""K-Net demo: draw panoptic / instance / semantic predictions on images, videos or a webcam.

Examples (see demo/README.md)::

    python demo/demo.py --config-file configs/coco/panoptic-segmentation/knet_R50_1x.yaml \
        --input photos/ 'more/*.jpg' --output out/vis --opts MODEL.WEIGHTS model_final.pth
    python demo/demo.py --config-file <cfg> --video-input clip.mp4 --output out/ \
        --opts MODEL.WEIGHTS model_final.pth

Exit status: 0 when every input was written, 1 when some failed, 2 on usage errors.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import knet_d2  # noqa: F401  (first: hides named third-party warnings; registers)

# isort: split
import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode
from predictor import VisualizationDemo
from tqdm import tqdm
from video_io import probe_video_codec, write_video

from knet_d2 import get_knet_cfg
from knet_d2.data.datasets.cli import add_dataset_argument
from knet_d2.engine import keep_freed_host_memory
from knet_d2.inference_options import check_precision
from knet_d2.rendering import RunSummary, run_on_images
from knet_d2.utils.io_paths import (
    expand_inputs,
    image_output_paths,
    output_is_directory,
    video_output_path,
)
from knet_d2.utils.visualization import TASKS

logger = logging.getLogger("knet_d2.demo")

WINDOW_NAME = "K-Net detections"


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Config as ``train_net.py`` builds it: D2 defaults + DeepLab + K-Net keys, file, opts."""
    try:
        return get_knet_cfg(args.config_file, args.opts, datasets=args.dataset)
    except (FileNotFoundError, ValueError) as e:  # ValueError: ConfigError
        raise SystemExit(f"demo/demo.py: {e}") from None


def check_model_inputs(cfg: CfgNode, allow_random_weights: bool = False) -> None:
    """Refuse to run a demo whose pictures would mislead (one-line ``SystemExit`` each).

    * ``DATASETS.TEST[0]`` (where the class names come from) must be registered or have class
      metadata; otherwise labels would be bare numbers;
    * ``MODEL.WEIGHTS`` empty means random weights: only with ``allow_random_weights``;
    * a local ``MODEL.WEIGHTS`` file must exist.
    """
    names = list(cfg.DATASETS.TEST)
    if not names:
        raise SystemExit(
            "demo/demo.py: DATASETS.TEST is empty; the demo takes the class names from its "
            "first dataset (set it, e.g. --opts DATASETS.TEST \"('my_val',)\", and register "
            "your data with --dataset)"
        )
    meta = MetadataCatalog.get(names[0]) if names[0] in MetadataCatalog.list() else None
    has_classes = meta is not None and (meta.get("thing_classes", None)
                                        or meta.get("stuff_classes", None))
    if names[0] not in DatasetCatalog.list() and not has_classes:
        raise SystemExit(
            f"demo/demo.py: dataset {names[0]!r} of DATASETS.TEST is not registered, so there "
            "are no class names; register it with --dataset NAME=KIND:... (README, 'Train on "
            "your own data') or fix the name"
        )
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        if allow_random_weights:
            logger.warning("MODEL.WEIGHTS is empty: drawing the outputs of random weights")
            return
        raise SystemExit(
            "demo/demo.py: MODEL.WEIGHTS is empty, so the model would have random weights; "
            "pass --opts MODEL.WEIGHTS <checkpoint> (or --allow-random-weights for a smoke test)"
        )
    path = weights.split("?", 1)[0]
    if "://" not in path and not os.path.isfile(path):
        raise SystemExit(
            f"demo/demo.py: MODEL.WEIGHTS file not found: {path} "
            f"(looked in {os.path.abspath(path)})"
        )


def get_parser() -> argparse.ArgumentParser:
    """The demo's command line."""
    parser = argparse.ArgumentParser(
        description="Draw K-Net predictions with Detectron2's visualizer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--input", nargs="+", metavar="PATH",
        help="image files, directories or glob patterns (quote globs: 'dir/*.jpg')",
    )
    src.add_argument("--video-input", metavar="VIDEO", help="a video file")
    src.add_argument("--webcam", action="store_true", help="read frames from camera 0")
    parser.add_argument(
        "--output", metavar="PATH",
        help="output file (single input) or directory (created when missing); without it the "
        "results are shown in a window",
    )
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5,
        help="instances and thing segments scoring below this are not drawn",
    )
    parser.add_argument(
        "--task", choices=TASKS, default="auto",
        help="what to draw; auto = panoptic, else instances, else semantic",
    )
    parser.add_argument(
        "--parallel", action="store_true",
        help="one inference worker process per GPU (one CPU worker without GPUs)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="N",
        help="images / video frames per model call (consecutive images that the model pads to "
        "the same size are batched; results equal those of batch size 1)",
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default=None,
        help="precision of the model's kernel path (bf16: autocast, CPU or CUDA; fp16: CUDA "
        "only); default: the config's TEST.PRECISION (fp32)",
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="run the model's kernel path through torch.compile (CPU: needs a C++ compiler; "
        "the first images are slow while it compiles)",
    )
    parser.add_argument(
        "--allow-random-weights", action="store_true",
        help="run even though MODEL.WEIGHTS is empty (random weights; for smoke tests only)",
    )
    add_dataset_argument(parser)
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu",
    )
    return parser


def _require_display() -> None:
    """Fail clearly when results cannot be shown in a window."""
    if re.search(r"GUI:\s*NONE", cv2.getBuildInformation()):
        raise SystemExit(
            "demo/demo.py: this OpenCV has no GUI support (opencv-python-headless); "
            "pass --output to save the results instead"
        )
    if platform.system() == "Linux" and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise SystemExit("demo/demo.py: no display found; pass --output to save the results")


def _show(path: Path, image_bgr: np.ndarray) -> bool:
    cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    cv2.imshow(WINDOW_NAME, image_bgr)
    return cv2.waitKey(0) != 27  # Esc stops


def _run_images(args: argparse.Namespace, demo_factory) -> RunSummary:
    inputs = expand_inputs(args.input)
    outputs = image_output_paths(inputs, args.output) if args.output else None
    if outputs is None:
        _require_display()
    logger.info("%d input image(s)", len(inputs))
    demo = demo_factory()
    return run_on_images(demo, inputs, outputs, show=_show)


def _run_video(args: argparse.Namespace, demo_factory) -> RunSummary:
    video = Path(args.video_input).expanduser()
    summary = RunSummary()
    if not video.is_file():
        raise FileNotFoundError(f"video not found: {video}")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        logger.error("Cannot open video %s", video)
        summary.failed.append((video, "unreadable video"))
        return summary
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not 0 < fps < 1000:
        fps = 30.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out_path = None
    if args.output:
        wants_file = not output_is_directory(args.output, 1)
        fourcc, suffix = probe_video_codec(
            (width, height), prefer_suffix=Path(args.output).suffix if wants_file else None
        )
        out_path = video_output_path(video, args.output, suffix)
    else:
        _require_display()
    demo = demo_factory()
    frames = tqdm(demo.run_on_video(cap), total=count if count > 0 else None, unit="frame",
                  desc=video.name)
    try:
        if out_path is not None:
            n = write_video(frames, out_path, fourcc, fps, (width, height))
            logger.info("Wrote %d frames to %s (%s)", n, out_path, fourcc)
            if n == 0:
                summary.failed.append((video, "no frame could be decoded"))
            else:
                summary.written.append(out_path)
        else:
            cv2.namedWindow(video.name, cv2.WINDOW_NORMAL)
            for frame in frames:
                cv2.imshow(video.name, frame)
                if cv2.waitKey(1) == 27:
                    break
            cv2.destroyAllWindows()
    finally:
        cap.release()
    logger.info("Summary: %s", summary)
    return summary


def _run_webcam(args: argparse.Namespace, demo_factory) -> RunSummary:
    if args.output:
        raise SystemExit("demo/demo.py: --webcam shows frames in a window; --output is not used")
    _require_display()
    demo = demo_factory()
    cam = cv2.VideoCapture(0)
    if not cam.isOpened():
        raise SystemExit("demo/demo.py: cannot open camera 0")
    try:
        for frame in tqdm(demo.run_on_video(cam), unit="frame"):
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, frame)
            if cv2.waitKey(1) == 27:
                break
    finally:
        cam.release()
        cv2.destroyAllWindows()
    return RunSummary()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; returns the exit status (0 ok, 1 some input failed, 2 usage error)."""
    args = get_parser().parse_args(argv)
    try:
        cfg = setup_cfg(args)
        check_model_inputs(cfg, args.allow_random_weights)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    if args.allow_random_weights and not cfg.MODEL.WEIGHTS:  # asked for: no weights check
        cfg.defrost()
        cfg.MODEL.WEIGHTS_STRICT = False
        cfg.freeze()
    cfg.defrost()
    if args.precision is not None:
        cfg.TEST.PRECISION = args.precision
    cfg.TEST.COMPILE = cfg.TEST.COMPILE or args.compile
    cfg.freeze()
    if cfg.KEEP_FREED_HOST_MEMORY:  # as train_net.py applies it, before the model is built
        keep_freed_host_memory()
    try:
        check_precision(cfg.TEST.PRECISION, cfg.MODEL.DEVICE)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.parallel and args.batch_size > 1:
            raise ValueError("--parallel runs one image per worker; use it without --batch-size")
    except ValueError as e:
        print(f"demo/demo.py: error: {e}", file=sys.stderr)
        return 2
    logger.info("Arguments: %s", args)

    built: List[VisualizationDemo] = []

    def demo_factory() -> VisualizationDemo:
        built.append(VisualizationDemo(
            cfg,
            instance_mode=ColorMode.IMAGE,
            parallel=args.parallel,
            task=args.task,
            confidence_threshold=args.confidence_threshold,
            batch_size=args.batch_size,
        ))
        return built[-1]

    try:
        if args.input:
            summary = _run_images(args, demo_factory)
        elif args.video_input:
            summary = _run_video(args, demo_factory)
        else:
            summary = _run_webcam(args, demo_factory)
    except (FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        print(f"demo/demo.py: error: {e}", file=sys.stderr)
        return 2
    finally:
        for demo in built:  # --parallel: stop the workers before returning
            demo.close()
    print(f"demo/demo.py: {summary}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    setup_logger(name="fvcore")
    setup_logger(name="knet_d2")
    sys.exit(main())
