#!/usr/bin/env python
"""Plot the losses and evaluation metrics of a training run from Detectron2's ``metrics.json``.

``metrics.json`` (written by D2's ``JSONWriter`` into ``OUTPUT_DIR``) holds one JSON object per
line, each with an ``iteration`` and the scalars logged at that iteration. This tool writes:

* ``losses.png``: ``total_loss`` and every loss term (keys starting with ``loss`` or containing
  ``_loss``) against the iteration, one panel per kind of loss: K-Net's per-stage terms
  ``s<k>_loss_<kind>`` and the kernel-initialisation term ``loss_rpn_<kind>`` share the panel
  of ``<kind>`` (cls, mask, dice, ...), one line per stage. Each curve is smoothed with a
  trailing median over ``--smooth-window`` logged points (default 20, the window of D2's
  ``CommonMetricPrinter``; the logged values themselves are D2's 20-iteration medians), the
  raw values drawn faintly behind it;
* ``eval_metrics.png``: the evaluation results (keys with a ``/``, e.g. ``panoptic_seg/PQ``),
  one panel per task prefix, when the run evaluated (per-class results such as
  ``segm/AP-person`` only with ``--per-class``). A task evaluated once is drawn as labelled
  bars (metric and value) rather than a column of unlabelled dots at one iteration;
* ``lr.png``: the learning rate, when logged.

Lines that are not JSON objects (e.g. a last line cut off by a killed run) are skipped. When an
iteration appears more than once (a resumed run), its last value wins.

Example::

    python tools/plot_metrics.py output/synthetic_panoptic_knet_R18_tiny --output-dir plots/

Exit status: 0 when plots were written, 1 when the file has nothing to plot, 2 when it is
missing or the command line is wrong.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

PROG = "tools/plot_metrics.py"
METRICS_FILE = "metrics.json"

#: key -> {iteration: value}
Series = Dict[str, Dict[int, float]]


class MetricsError(Exception):
    """``metrics.json`` is missing or holds nothing usable; ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def find_metrics_file(path: Path) -> Path:
    """``path`` itself if it is a file, else ``path/metrics.json`` (which must exist)."""
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / METRICS_FILE
        if candidate.is_file():
            return candidate
        raise MetricsError(f"no {METRICS_FILE} in run directory {path}", status=2)
    raise MetricsError(
        f"{path} does not exist (expected a run directory containing {METRICS_FILE}, "
        f"or a {METRICS_FILE} file)",
        status=2,
    )


def _as_number(value: object) -> Optional[float]:
    """A finite float for int / float values (not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_metrics(lines: Iterable[str]) -> Tuple[Series, int]:
    """Parse ``metrics.json`` lines into per-key series.

    Returns:
        ``(series, skipped)``: ``series[key][iteration] = value`` for every numeric scalar of
        every line with an integer ``iteration`` (later lines win), and the number of non-blank
        lines that were skipped (not JSON, not an object, or without an iteration).
    """
    series: Series = defaultdict(dict)
    skipped = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        iteration = record.get("iteration") if isinstance(record, dict) else None
        if isinstance(iteration, bool) or not isinstance(iteration, (int, float)):
            skipped += 1
            continue
        for key, value in record.items():
            number = _as_number(value)
            if key != "iteration" and number is not None:
                series[key][int(iteration)] = number
    return dict(series), skipped


def is_loss_key(key: str) -> bool:
    """``total_loss`` and loss terms: keys starting with ``loss`` or containing ``_loss``."""
    return "/" not in key and (key == "total_loss" or key.startswith("loss") or "_loss" in key)


def is_eval_key(key: str, per_class: bool = False) -> bool:
    """Evaluation results, logged by D2 as ``<task>/<metric>`` (e.g. ``panoptic_seg/PQ``).

    Per-class results (``segm/AP-person``, ``sem_seg/IoU-wall``) only when ``per_class``.
    """
    if "/" not in key:
        return False
    return per_class or "-" not in key.split("/", 1)[1]


def _sorted_points(points: Dict[int, float]) -> Tuple[List[int], List[float]]:
    its = sorted(points)
    return its, [points[i] for i in its]


def _new_figure(rows: int = 1, cols: int = 1, size: Tuple[float, float] = (8.0, 5.0)):
    """A figure drawn with the Agg canvas (no pyplot / global backend state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * cols, size[1] * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


#: D2's ``CommonMetricPrinter`` prints losses as the median over this many values
D2_SMOOTHING_WINDOW = 20
_STAGE_LOSS = re.compile(r"^s(\d+)_loss_(\w+)$")
_RPN_LOSS = re.compile(r"^loss_rpn_(\w+)$")


def smooth_median(values: Sequence[float], window: int = D2_SMOOTHING_WINDOW) -> List[float]:
    """Trailing median: point ``i`` is the median of ``values[max(0, i - window + 1) : i + 1]``
    (D2's ``HistoryBuffer.median(window)`` at every point); ``window <= 1`` returns a copy."""
    if window <= 1:
        return list(values)
    return [statistics.median(values[max(0, i - window + 1): i + 1]) for i in range(len(values))]


def loss_groups(keys: Iterable[str]) -> Dict[str, List[Tuple[str, str]]]:
    """Panel title -> ``[(key, line label)]``: ``total_loss`` alone, then one panel per loss
    kind with its stages (``s0_loss_cls`` -> panel ``cls``, label ``stage 0``;
    ``loss_rpn_mask`` -> panel ``mask``, label ``kernel init``); other keys by their name."""
    groups: Dict[str, List[Tuple[str, str]]] = defaultdict(list)
    for key in sorted(keys):
        stage, rpn = _STAGE_LOSS.match(key), _RPN_LOSS.match(key)
        if key == "total_loss":
            groups["total_loss"].append((key, key))
        elif stage:
            groups[stage.group(2)].append((key, f"stage {stage.group(1)}"))
        elif rpn:
            groups[rpn.group(1)].append((key, "kernel init"))
        else:
            kind = key[len("loss_"):] if key.startswith("loss_") else key
            groups[kind].append((key, key))
    for lines in groups.values():  # kernel init first, then stages in order
        lines.sort(key=lambda kl: (kl[1] != "kernel init", len(kl[1]), kl[1]))
    ordered = sorted(groups, key=lambda g: (g != "total_loss", g))
    return {g: groups[g] for g in ordered}


def plot_losses(
    series: Series, keys: Sequence[str], path: Path, log_scale: bool,
    window: int = D2_SMOOTHING_WINDOW,
):
    """One panel per loss kind (see :func:`loss_groups`), smoothed; returns the figure."""
    groups = loss_groups(keys)
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = _new_figure(rows, cols, size=(5.5, 3.8))
    for ax, (title, lines) in zip(axes, groups.items()):
        for key, label in lines:
            its, values = _sorted_points(series[key])
            if len(its) == 1:
                ax.plot(its, values, marker="o", label=label)
                continue
            smooth = smooth_median(values, window)
            (line,) = ax.plot(its, smooth, label=label, linewidth=1.6)
            if window > 1:
                ax.plot(its, values, color=line.get_color(), alpha=0.2, linewidth=0.8)
        ax.set_xlabel("iteration")
        ax.set_title(title if title == "total_loss" else f"loss: {title}")
        if log_scale and all(v > 0 for k, _ in lines for v in series[k].values()):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize="small")
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    note = f"median over {window} logged points" if window > 1 else "not smoothed"
    fig.suptitle(f"training losses ({note})")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return fig


def plot_eval_metrics(series: Series, keys: Sequence[str], path: Path):
    """One panel per task prefix (``segm``, ``panoptic_seg``, ...); returns the figure.

    A task evaluated at a single iteration gets labelled horizontal bars (one per metric,
    value written at the bar); a metric with a single point among several evaluations is
    labelled with its value.
    """
    groups: Dict[str, List[str]] = defaultdict(list)
    for key in sorted(keys):
        groups[key.split("/", 1)[0]].append(key)
    cols = min(2, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = _new_figure(rows, cols, size=(7.0, 4.5))
    for ax, (task, task_keys) in zip(axes, groups.items()):
        iterations = sorted({it for key in task_keys for it in series[key]})
        if len(iterations) == 1:
            names = [key.split("/", 1)[1] for key in task_keys]
            values = [series[key][iterations[0]] for key in task_keys]
            bars = ax.barh(names, values)
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3)
            ax.invert_yaxis()
            ax.set_title(f"{task} (evaluated once, iteration {iterations[0]})")
            ax.grid(True, axis="x", alpha=0.3)
            continue
        for key in task_keys:
            its, values = _sorted_points(series[key])
            name = key.split("/", 1)[1]
            ax.plot(its, values, label=name, marker="o")
            if len(its) == 1:
                ax.annotate(f"{name} {values[0]:.2f}", (its[0], values[0]),
                            textcoords="offset points", xytext=(5, 5), fontsize="small")
        ax.set_xlabel("iteration")
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", ncol=2)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return fig


def plot_lr(points: Dict[int, float], path: Path) -> None:
    """The learning rate against the iteration."""
    fig, (ax,) = _new_figure(size=(8.0, 3.5))
    its, values = _sorted_points(points)
    ax.plot(its, values)
    ax.set_xlabel("iteration")
    ax.set_ylabel("lr")
    ax.set_title("learning rate")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def make_plots(
    metrics_file: Path, output_dir: Path, log_scale: bool = False, per_class: bool = False,
    smooth_window: int = D2_SMOOTHING_WINDOW,
) -> List[Path]:
    """Read ``metrics_file`` and write the PNGs into ``output_dir``; returns their paths.

    Raises :class:`MetricsError` when the file has no usable line or nothing to plot.
    """
    try:
        text = metrics_file.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise MetricsError(f"cannot read {metrics_file}: {e}", status=2) from None
    series, skipped = read_metrics(text.splitlines())
    if skipped:
        print(f"{PROG}: skipped {skipped} unreadable line(s) of {metrics_file}", file=sys.stderr)
    if not series:
        raise MetricsError(
            f"{metrics_file} has no usable line (expected one JSON object with an 'iteration' "
            "per line, as written by Detectron2's JSONWriter)",
            status=1,
        )
    loss_keys = [k for k in series if is_loss_key(k)]
    eval_keys = [k for k in series if is_eval_key(k, per_class)]
    if not loss_keys and not eval_keys:
        raise MetricsError(
            f"{metrics_file} has no loss or evaluation metrics to plot "
            f"(keys found: {sorted(series)})",
            status=1,
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if loss_keys:
        written.append(output_dir / "losses.png")
        plot_losses(series, loss_keys, written[-1], log_scale, smooth_window)
    if eval_keys:
        written.append(output_dir / "eval_metrics.png")
        plot_eval_metrics(series, eval_keys, written[-1])
    if "lr" in series:
        written.append(output_dir / "lr.png")
        plot_lr(series["lr"], written[-1])
    return written


def get_parser() -> argparse.ArgumentParser:
    """The tool's command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Plot losses and evaluation metrics from a Detectron2 metrics.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "path", metavar="RUN_DIR_OR_METRICS_JSON",
        help="a training OUTPUT_DIR containing metrics.json, or the metrics.json file",
    )
    parser.add_argument(
        "--output-dir", metavar="DIR",
        help="where to write the PNGs (created when missing); default: <run dir>/plots",
    )
    parser.add_argument("--log-scale", action="store_true", help="logarithmic loss axis")
    parser.add_argument(
        "--smooth-window", type=int, default=D2_SMOOTHING_WINDOW, metavar="N",
        help="trailing median over N logged loss values (D2's window); 1 = raw values",
    )
    parser.add_argument(
        "--per-class", action="store_true",
        help="also plot per-class evaluation results (keys like 'segm/AP-person')",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        metrics_file = find_metrics_file(Path(args.path))
        output_dir = Path(args.output_dir) if args.output_dir else metrics_file.parent / "plots"
        if output_dir.exists() and not output_dir.is_dir():
            raise MetricsError(f"--output-dir {output_dir} exists and is not a directory", 2)
        written = make_plots(metrics_file, output_dir, log_scale=args.log_scale,
                             per_class=args.per_class, smooth_window=args.smooth_window)
    except MetricsError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.status
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
