"""Result tables of the benchmark scripts: Markdown tables (``tabulate``, a Detectron2
dependency) with numbers to three significant digits, ratio cells and output counts."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tabulate import tabulate


def format_cell(value: object) -> str:
    """Floats to three significant digits (one decimal from 10 up, ``nan`` kept); the rest as
    ``str``."""
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


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
    """A Markdown table (also readable as plain text), cells by :func:`format_cell`."""
    cells = [[format_cell(v) for v in row] for row in rows]
    return tabulate(cells, headers=list(header), tablefmt="github", disable_numparse=True)


#: COCOEvaluator ``segm`` keys of the mask-AP tables and their column names
MASK_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm")
MASK_AP_HEADER = ("mask AP", "AP50", "AP75", "APs", "APm")


def mask_ap_table(row_title: str, results: Dict[str, Dict[str, float]],
                  keys: Sequence[str] = MASK_AP_KEYS,
                  header: Sequence[str] = MASK_AP_HEADER) -> List[str]:
    """The lines of a Markdown table with one row per entry of ``results`` (name -> D2's
    ``segm`` results) and the columns ``keys`` (named ``header``); a missing key is ``nan``."""
    rows = [[name, *(float(r.get(k, float("nan"))) for k in keys)] for name, r in results.items()]
    return format_table([row_title, *header], rows).splitlines()


def fmt_ratio(value: float, target: Optional[float]) -> Tuple[str, str, str]:
    """(ratio, target, met) cells."""
    if target is None:
        return f"{value:.2f}", "-", "-"
    return f"{value:.2f}", f">= {target:g}", "yes" if value >= target else "**no**"
