#!/usr/bin/env python
"""Export a knet_d2 model (K-Net instance / panoptic / semantic) to ONNX or TorchScript.

    python tools/export_model.py --config-file configs/synthetic/panoptic/knet_R18_tiny.yaml \
        --format onnx --output export/panoptic --dynamic --check \
        MODEL.WEIGHTS output/synthetic_panoptic_knet_R18_tiny/model_final.pth

Writes ``DIR/model.onnx`` (or ``DIR/model.ts``) and ``DIR/model.onnx.json`` (or
``DIR/model.ts.json``): the export metadata (channel order, test resize, normalisation,
padding, output names, post-processing thresholds, class names and colours), which is also
stored inside the model file. ``python -m knet_onnx IMAGE --model DIR --output OUT`` runs an
ONNX export with onnxruntime, numpy and OpenCV only.
Existing files are never overwritten without ``--overwrite``. The graph maps the normalised,
padded image batch to the final-stage tensors; normalisation, padding and all post-processing
stay in Python (``knet_d2.export.ExportedKNetPredictor``). See docs/EXPORT.md.

The tracing input is ``--sample-image`` resized like D2's ``DefaultPredictor``
(``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), else a random image of ``--input-size H W``, else
image 0 of the synthetic val split (rendered in memory). ``--check`` runs the exported file
(ONNX Runtime / TorchScript) on it, prints the max abs difference of every output against
PyTorch and compares the final D2 predictions; the exit status is 1 when a difference exceeds
``--tolerance`` + ``--rtol`` x the output's largest magnitude.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from knet_d2 import get_knet_cfg
from knet_d2.export import (
    MAX_OPSET,
    MIN_OPSET,
    SUPPORTED_META_ARCHITECTURES,
    ExportedKNetPredictor,
    UnsupportedModelError,
    export_onnx,
    export_torchscript,
    preprocess_batch,
    preprocess_params,
    reference_outputs,
)
from knet_d2.export.predictor import compare_predictions

logger = logging.getLogger("knet_d2.export_model")

FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.ts"}


class ExportError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--format", choices=sorted(FILE_NAMES), default="onnx")
    parser.add_argument("--output", required=True, metavar="DIR", help="created if missing")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--sample-image", metavar="PATH", help="image used for tracing/checking")
    src.add_argument(
        "--input-size", nargs=2, type=int, metavar=("H", "W"),
        help="trace with a random image of this size (no test-time resize)",
    )
    parser.add_argument(
        "--opset", type=int, default=MIN_OPSET, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET}"
    )
    parser.add_argument(
        "--dynamic", action="store_true",
        help="ONNX: dynamic batch / height / width axes (TorchScript traces are always "
        "shape-generic)",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="run the exported file on the sample and compare with PyTorch",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-3,
        help="--check fails when an output's max abs difference exceeds "
        "tolerance + rtol * max|PyTorch output|",
    )
    parser.add_argument("--rtol", type=float, default=1e-5, help="see --tolerance")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[],
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


# ----------------------------------------------------------------------------- setup
def setup_cfg(args: argparse.Namespace):
    """Config as train_net.py builds it, forced onto the CPU (export is device-independent)."""
    try:
        cfg = get_knet_cfg(args.config_file, args.opts, freeze=False)
    except FileNotFoundError as e:
        raise ExportError(str(e)) from None
    except (KeyError, ValueError, AssertionError) as e:
        raise ExportError(f"{args.config_file}: invalid config or overrides: {e}") from None
    cfg.MODEL.DEVICE = "cpu"
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in SUPPORTED_META_ARCHITECTURES:
        raise ExportError(
            f"{args.config_file}: MODEL.META_ARCHITECTURE {arch!r} cannot be exported; "
            f"supported: {', '.join(SUPPORTED_META_ARCHITECTURES)}"
        )
    cfg.freeze()
    return cfg


def build_model(cfg) -> torch.nn.Module:
    """Build the eval-mode model and load ``MODEL.WEIGHTS`` (random init when empty; refused
    unless it fills every parameter, see ``MODEL.WEIGHTS_STRICT``)."""
    from detectron2.modeling import build_model as d2_build_model

    from knet_d2.engine import IncompatibleWeightsError, KNetCheckpointer, check_inference_weights

    if not cfg.MODEL.WEIGHTS:
        # reproducible random init (exports of untrained models are for testing the pipeline)
        torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    model = d2_build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        if not os.path.isfile(cfg.MODEL.WEIGHTS) and "://" not in cfg.MODEL.WEIGHTS:
            raise ExportError(f"MODEL.WEIGHTS file not found: {cfg.MODEL.WEIGHTS}")
        checkpointer = KNetCheckpointer(model)  # official K-Net releases convert on load
        checkpointer.load(cfg.MODEL.WEIGHTS)
        try:  # a checkpoint that leaves parameters random is refused by name
            check_inference_weights(
                checkpointer.last_load_report, strict=cfg.MODEL.WEIGHTS_STRICT,
                weights=cfg.MODEL.WEIGHTS,
            )
        except IncompatibleWeightsError as e:
            raise ExportError(str(e)) from None
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    return model


def _test_resize(cfg, image: np.ndarray) -> np.ndarray:
    """D2 ``DefaultPredictor``'s test-time resize (shortest edge)."""
    from detectron2.data import transforms as T

    if cfg.INPUT.MIN_SIZE_TEST <= 0:
        return image
    aug = T.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    )
    return aug.get_transform(image).apply_image(image)


def load_sample(cfg, args: argparse.Namespace) -> dict:
    """The D2 input dict (``image`` (3, H, W) uint8, ``height``, ``width``) used for tracing."""
    fmt = cfg.INPUT.FORMAT
    if args.input_size:
        h, w = args.input_size
        if h < 32 or w < 32:
            raise ExportError(f"--input-size must be at least 32 x 32, got {h} x {w}")
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        orig = (h, w)
    else:
        if args.sample_image:
            from detectron2.data.detection_utils import read_image

            if not os.path.isfile(args.sample_image):
                raise ExportError(f"--sample-image not found: {args.sample_image}")
            try:
                image = read_image(args.sample_image, format=fmt)
            except Exception as e:  # PIL raises several types for bad files
                raise ExportError(f"{args.sample_image}: cannot read image: {e}") from None
        else:
            from knet_d2.data.synthetic import render_sample, split_default_seed

            image = render_sample(0, seed=split_default_seed("val")).image  # RGB
            if fmt == "BGR":
                image = image[:, :, ::-1]
        orig = image.shape[:2]
        image = _test_resize(cfg, image)
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return {"image": tensor, "height": int(orig[0]), "width": int(orig[1])}


def output_paths(out_dir: Path, fmt: str, overwrite: bool) -> Dict[str, Path]:
    """Model and metadata paths; refuses existing files unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--output {out_dir} exists and is not a directory")
    model_file = out_dir / FILE_NAMES[fmt]
    paths = {"model": model_file, "meta": out_dir / f"{model_file.name}.json"}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ExportError(
            f"refusing to overwrite existing file(s): {', '.join(existing)} (pass --overwrite)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    return paths


# ----------------------------------------------------------------------------- check
def _print_raw_diffs(ref: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor], tag: str,
                     atol: float, rtol: float) -> bool:
    ok = True
    for name, r in ref.items():
        g = got[name]
        if g.shape != r.shape:
            print(f"[check] {tag} {name}: shape {tuple(g.shape)} != PyTorch {tuple(r.shape)}")
            ok = False
            continue
        diff = (g.float() - r.float()).abs().max().item()
        scale = r.abs().max().item()
        ok &= diff <= atol + rtol * scale
        print(f"[check] {tag} {name} {tuple(r.shape)}: max abs diff {diff:.3g} "
              f"(max |value| {scale:.3g})")
    return ok


def run_check(
    model, path: Path, sample: dict, meta: dict, atol: float, rtol: float
) -> bool:
    """Compare the exported file with PyTorch; prints the figures, returns pass / fail."""
    try:
        predictor = ExportedKNetPredictor.load(path)
    except ImportError as e:
        raise ExportError(f"--check: {e}") from None
    images = predictor.preprocess([sample])
    ok = _print_raw_diffs(
        reference_outputs(model, images.tensor), predictor.run_raw(images.tensor),
        f"sample {tuple(images.tensor.shape)}", atol, rtol,
    )
    with torch.no_grad():
        ref = model([sample])
    for line in compare_predictions(ref, predictor([sample])):
        print(f"[check] final outputs: {line}")
    if meta["dynamic"]:
        # a second input size (and batch 2) through the same graph: the sample resized
        step = max(meta["size_divisibility"], 32)
        h, w = images.tensor.shape[-2:]
        resized = F.interpolate(
            images.tensor, size=(h + step, w + 2 * step), mode="bilinear", align_corners=False
        )
        other = torch.cat([resized, resized.flip(-1)])
        ok &= _print_raw_diffs(
            reference_outputs(model, other), predictor.run_raw(other),
            f"second input {tuple(other.shape)}", atol, rtol,
        )
    print(f"[check] {'PASSED' if ok else 'FAILED'} (tolerance {atol:g} + {rtol:g} * max|value|)")
    if not ok and meta["meta_architecture"] == "KNet":
        print("[check] note: K-Net groups features with hard masks (sigmoid > 0.5); a mask "
              "logit within float rounding of 0 flips a pixel and shifts that kernel's output. "
              "See docs/EXPORT.md, 'Limitations'.")
    return ok


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        if args.format == "onnx" and not MIN_OPSET <= args.opset <= MAX_OPSET:
            raise ExportError(f"--opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {args.opset}")
        cfg = setup_cfg(args)
        paths = output_paths(Path(args.output), args.format, args.overwrite)
        sample = load_sample(cfg, args)
        model = build_model(cfg)
        images = preprocess_batch([sample], **preprocess_params(model))
        print(f"[export] {cfg.MODEL.META_ARCHITECTURE} from {args.config_file}, input "
              f"{tuple(images.tensor.shape)} -> {paths['model']}")
        if args.format == "onnx":
            meta = export_onnx(
                model, images.tensor, paths["model"], opset=args.opset, dynamic=args.dynamic,
                cfg=cfg,
            )
        else:
            meta = export_torchscript(model, images.tensor, paths["model"], cfg=cfg)
        paths["meta"].write_text(json.dumps(meta, indent=2) + "\n")
        print(f"[export] wrote {paths['model']} and {paths['meta']}")
        print(f"[export] inputs: {meta['input_name']} {meta['input_shape']} (dynamic: "
              f"{meta['dynamic']}); outputs: {', '.join(meta['output_names'])}")
        if args.format == "onnx":
            print(f"[export] without PyTorch: python -m knet_onnx IMAGE_OR_DIR --model "
                  f"{paths['model'].parent} --output OUT_DIR  (docs/EXPORT.md)")
            if not meta["dynamic"]:
                print(f"[export] note: a static graph takes only {meta['input_shape']} "
                      "batches; export with --dynamic to run it on images of any size")
        if args.check and not run_check(
            model, paths["model"], sample, meta, args.tolerance, args.rtol
        ):
            return 1
    except (ExportError, UnsupportedModelError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
