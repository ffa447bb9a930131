#!/usr/bin/env python
"""Which panoptic merge threshold suits a briefly trained K-Net? Chosen on a held-out split,
then scored on val.

K-Net's panoptic merge keeps a thing kernel only when its class score reaches
``MODEL.KNET.TEST.INSTANCE_SCORE_THRESH`` (official 0.3, set for models trained for hours on
COCO), keeps any kernel only when the pixels it wins are at least ``OVERLAP_THRESHOLD`` (official
0.6) of its own mask, and binarises masks at ``MASK_THRESHOLD`` (0.5). A model trained for 10
minutes scores its things lower and draws softer masks, so these values may drop true things or
keep false ones. This script scores trained panoptic checkpoints with D2's COCOPanopticEvaluator
(per-class, ``benchmarks.synthetic_evaluators``) at several values of one of the three
(``--threshold score|overlap|mask``, the others as the config sets them) on a *tune* split of
the synthetic set (``knet_synth_panoptic_tune``: rendered like val with its own seed, never used
for training or for the issue's figures), picks the value with the best mean PQ_th there, and
only then scores every checkpoint on val at the official value and at the chosen one.

    python -m benchmarks.panoptic_score_threshold --weights RUN1/model_final.pth \\
        RUN2/model_final.pth --output OUT [--threshold overlap]

Raw JSON: ``OUT/panoptic_score_threshold.json`` (``--threshold score``) or
``OUT/panoptic_<name>_threshold.json`` (header, every score, the choice).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple

import torch

__all__ = ["TUNE_SPLIT", "THRESHOLDS", "choose_threshold", "json_name", "parse_args", "main"]

RECIPE = "configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml"
TUNE_SPLIT = "tune"


class _Threshold(NamedTuple):
    attribute: str  # of the KNet model, read by its panoptic merge
    official: float
    grid: Tuple[float, ...]  # the default values scored


#: ``--threshold`` name -> the model attribute, its official value, the default grid.
THRESHOLDS: Dict[str, _Threshold] = {
    "score": _Threshold("instance_score_thresh", 0.3, (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)),
    "overlap": _Threshold("overlap_threshold", 0.6, (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),
    "mask": _Threshold("mask_threshold", 0.5, (0.3, 0.4, 0.5, 0.6, 0.7)),
}
OFFICIAL_THRESHOLD = THRESHOLDS["score"].official


def json_name(threshold: str) -> str:
    """The raw JSON's file name for ``--threshold threshold`` (the score's keeps its old name)."""
    return ("panoptic_score_threshold.json" if threshold == "score"
            else f"panoptic_{threshold}_threshold.json")


def choose_threshold(pq_th: Dict[float, List[float]], official: float = OFFICIAL_THRESHOLD
                     ) -> float:
    """The value with the highest mean PQ_th over the checkpoints (``{value: [PQ_th of each
    checkpoint]}``); of equal means, the one closest to ``official``."""
    if not pq_th:
        raise ValueError("no thresholds were scored")
    return max(pq_th, key=lambda t: (sum(pq_th[t]) / len(pq_th[t]), -abs(t - official)))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config-file", default=RECIPE, help="the checkpoints' config")
    ap.add_argument("--weights", nargs="+", required=True, help="trained panoptic checkpoints")
    ap.add_argument("--threshold", choices=sorted(THRESHOLDS), default="score",
                    help="which merge threshold to choose (score: INSTANCE_SCORE_THRESH, "
                    "overlap: OVERLAP_THRESHOLD, mask: MASK_THRESHOLD)")
    ap.add_argument("--thresholds", type=float, nargs="+",
                    help="the values scored (default: the threshold's grid in THRESHOLDS)")
    ap.add_argument("--tune-images", type=int, default=200, help="images of the tune split")
    ap.add_argument("--output", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    missing = [w for w in a.weights if not Path(w).is_file()]
    if missing:
        ap.error(f"--weights: no such file: {', '.join(missing)}")
    official = THRESHOLDS[a.threshold].official
    if a.thresholds is None:
        a.thresholds = list(THRESHOLDS[a.threshold].grid)
    if official not in a.thresholds or min(a.thresholds) < 0 or a.tune_images < 1:
        ap.error(f"--thresholds must be >= 0 and include the official {a.threshold} threshold "
                 f"{official}; --tune-images >= 1")
    if a.threshold != "score" and max(a.thresholds) > 1:
        ap.error(f"--thresholds: the {a.threshold} threshold is a fraction, at most 1")
    if (Path(a.output) / json_name(a.threshold)).exists():
        ap.error(f"{a.output}/{json_name(a.threshold)} exists; choose another --output")
    return a


def _scores(model, loader, dataset: str, output_dir: str) -> Dict[str, float]:
    from detectron2.evaluation import inference_on_dataset

    from .synthetic_evaluators import build_synthetic_evaluator

    evaluator = build_synthetic_evaluator(dataset, ["panoptic"], output_dir)
    res = inference_on_dataset(model, loader, evaluator)["panoptic_seg"]
    return {k: float(res[k]) for k in ("PQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st")}


def run(a: argparse.Namespace, argv: List[str]) -> int:
    from knet_d2.data.datasets.register_synthetic import (
        ensure_synthetic_dataset,
        register_synthetic_datasets,
    )
    from knet_d2.engine.checkpointer import KNetCheckpointer
    from knet_d2.engine.defaults import get_knet_cfg
    from train_net import Trainer

    from .cli import environment, run_header, write_json

    torch.set_num_threads(a.threads)
    header = run_header(argv, __spec__.name, "cpu", a.threads)
    print("\n".join(environment(header)))
    root = ensure_synthetic_dataset(splits=["val"])
    register_synthetic_datasets(root, {TUNE_SPLIT: a.tune_images}, prefix="knet_synth")
    tune, val = f"knet_synth_panoptic_{TUNE_SPLIT}", "knet_synth_panoptic_val"
    cfg = get_knet_cfg(a.config_file, ["MODEL.DEVICE", "cpu", "MODEL.KNET.TEST.PANOPTIC_ON",
                                       "True", "MODEL.KNET.TEST.INSTANCE_ON", "False",
                                       "MODEL.KNET.TEST.SEMANTIC_ON", "False"])
    models = []
    for w in a.weights:
        model = Trainer.build_model(cfg)
        KNetCheckpointer(model).load(w)
        models.append(model.eval())
    scratch = str(Path(a.output) / "evaluator")
    attribute, official, _ = THRESHOLDS[a.threshold]
    on_tune: Dict[float, List[Dict[str, float]]] = {}
    loader = Trainer.build_test_loader(cfg, tune)
    for t in a.thresholds:
        for model in models:
            setattr(model, attribute, t)
            on_tune.setdefault(t, []).append(_scores(model, loader, tune, scratch))
            print(f"tune {a.threshold} t={t}: PQ_th {on_tune[t][-1]['PQ_th']:.1f}", flush=True)
    chosen = choose_threshold({t: [r["PQ_th"] for r in rs] for t, rs in on_tune.items()},
                              official)
    on_val: Dict[float, List[Dict[str, float]]] = {}
    loader = Trainer.build_test_loader(cfg, val)
    for t in sorted({official, chosen}):
        for model in models:
            setattr(model, attribute, t)
            on_val.setdefault(t, []).append(_scores(model, loader, val, scratch))
    lines = [f"{a.threshold} threshold ({attribute}) chosen on {tune} ({a.tune_images} "
             f"images): {chosen}"]
    for t, rs in sorted(on_tune.items()):
        lines.append(f"tune  t={t:<5} PQ_th " + " / ".join(f"{r['PQ_th']:.1f}" for r in rs))
    for t, rs in sorted(on_val.items()):
        lines.append(f"val   t={t:<5} PQ_th " + " / ".join(f"{r['PQ_th']:.1f}" for r in rs)
                     + "   PQ " + " / ".join(f"{r['PQ']:.1f}" for r in rs))
    print("\n".join(lines))
    write_json(Path(a.output) / json_name(a.threshold), {
        **header, "weights": a.weights, "config_file": a.config_file,
        "threshold": {"name": a.threshold, "attribute": attribute, "official": official},
        "tune_split": {"name": tune, "images": a.tune_images}, "chosen": chosen,
        "tune": {str(t): rs for t, rs in on_tune.items()},
        "val": {str(t): rs for t, rs in on_val.items()}, "table": lines})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .bench_lock import run_locked

    return run_locked(__spec__.name, parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
