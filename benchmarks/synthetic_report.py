"""The synthetic benchmark's result table: K-Net next to the two baselines, and the targets.

Rows: PQ, PQ_th, PQ_st, mask AP, mIoU, then per class PQ (panoptic), AP (instance masks, things)
and IoU (semantic). Columns: K-Net, ``colour_only`` and ``majority_stuff``
(:mod:`benchmarks.synthetic_baselines`), all measured by the same D2 evaluators on the same val
split. The targets (issue 14, each within 10 minutes of CPU training): PQ_th >= 50, mask AP >= 50,
mIoU >= 60, each also at least :data:`MARGIN` points above the colour-only baseline.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from benchmarks.report import format_table

__all__ = [
    "TARGETS",
    "MARGIN",
    "BASELINES",
    "merge_task_results",
    "comparison",
    "format_comparison",
]

#: (row label, flat metric key, absolute target)
TARGETS: Tuple[Tuple[str, str, float], ...] = (
    ("PQ_th", "panoptic_seg/PQ_th", 50.0),
    ("mask AP", "segm/AP", 50.0),
    ("mIoU", "sem_seg/mIoU", 60.0),
)
MARGIN = 20.0  # points above the colour-only baseline
BASELINES = ("colour_only", "majority_stuff")
_HEADLINE = (
    ("PQ", "panoptic_seg/PQ"),
    ("PQ_th", "panoptic_seg/PQ_th"),
    ("PQ_st", "panoptic_seg/PQ_st"),
    ("mask AP", "segm/AP"),
    ("mIoU", "sem_seg/mIoU"),
)
# which benchmark task's model reports a metric group when several tasks evaluated it
_TASK_OF_GROUP = {"panoptic_seg": "panoptic", "segm": "instance", "bbox": "instance",
                  "sem_seg": "semantic"}


def merge_task_results(summaries: Mapping[str, dict]) -> Tuple[Dict[str, float], Dict[str, str]]:
    """One flat ``{metric: value}`` from the task runs of ``benchmarks/train_synthetic.py``
    (``{task: benchmark_summary}``, each with nested ``results``): a metric group comes from
    its own task's model (PQ from panoptic, segm from instance, sem_seg from semantic), else
    from any task that evaluated it. Also returns ``{group: task}``."""
    flat: Dict[str, float] = {}
    source: Dict[str, str] = {}
    ok = {t: s for t, s in summaries.items() if not s.get("failed") and "results" in s}
    for task, s in sorted(ok.items(), key=lambda ts: ts[0]):
        for group, metrics in s["results"].items():
            if group in source and _TASK_OF_GROUP.get(group) != task:
                continue
            source[group] = task
            for key in [k for k in flat if k.startswith(group + "/")]:
                del flat[key]
            flat.update({f"{group}/{k}": float(v) for k, v in metrics.items()})
    return flat, source


def _value(metrics: Mapping[str, float], key: str) -> Optional[float]:
    v = metrics.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _metric_rows(class_names: Sequence[str], thing_names: Sequence[str]) -> List[tuple]:
    rows = list(_HEADLINE)
    rows += [(f"PQ {c}", f"panoptic_seg/PQ-{c}") for c in class_names]
    rows += [(f"AP {c}", f"segm/AP-{c}") for c in thing_names]
    rows += [(f"IoU {c}", f"sem_seg/IoU-{c}") for c in class_names]
    return rows


def comparison(
    model: Mapping[str, float], baselines: Mapping[str, Mapping[str, float]],
    class_names: Sequence[str], thing_names: Sequence[str],
) -> dict:
    """``{"rows": [{metric, key, knet, colour_only, majority_stuff}], "targets": [{metric,
    target, colour_only, required, knet, met}], "all_met": bool}``; values None when not
    measured (e.g. a task that did not run)."""
    rows = []
    for label, key in _metric_rows(class_names, thing_names):
        row = {"metric": label, "key": key, "knet": _value(model, key)}
        row.update({b: _value(baselines.get(b, {}), key) for b in BASELINES})
        if any(row[c] is not None for c in ("knet",) + BASELINES):
            rows.append(row)
    targets = []
    for label, key, absolute in TARGETS:
        colour = _value(baselines.get("colour_only", {}), key)
        required = absolute if colour is None else max(absolute, colour + MARGIN)
        knet = _value(model, key)
        targets.append({"metric": label, "key": key, "target": absolute, "colour_only": colour,
                        "required": required, "knet": knet,
                        "met": None if knet is None else bool(knet >= required)})
    return {"rows": rows, "targets": targets,
            "all_met": all(t["met"] for t in targets)}


def _cell(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_comparison(table: dict, model_label: str = "K-Net") -> str:
    """Two Markdown tables (metrics, then targets) of a :func:`comparison` result."""
    metrics = format_table(
        ["metric", model_label, "colour-only", "majority stuff"],
        [[r["metric"], _cell(r["knet"]), _cell(r["colour_only"]), _cell(r["majority_stuff"])]
         for r in table["rows"]],
    )
    verdict = {True: "yes", False: "**no**", None: "not run"}
    targets = format_table(
        ["target (issue 14)", model_label, "colour-only", "needed", "met"],
        [[f"{t['metric']} >= {t['target']:g} and >= colour-only + {MARGIN:g}", _cell(t["knet"]),
          _cell(t["colour_only"]), _cell(t["required"]), verdict[t["met"]]]
         for t in table["targets"]],
    )
    return metrics + "\n\n" + targets
