"""tools/plot_metrics.py: smoothed, grouped loss panels and a labelled single evaluation."""
from __future__ import annotations

import importlib.util
import json
import statistics

import pytest

from tests.helpers.paths import REPO_ROOT

KNET_LOSSES = ["total_loss", "loss_rpn_mask", "loss_rpn_dice", "loss_rpn_seg"] + [
    f"s{k}_loss_{kind}" for k in range(3) for kind in ("cls", "mask", "dice")
]


@pytest.fixture(scope="module")
def tool():
    path = REPO_ROOT / "tools/plot_metrics.py"
    spec = importlib.util.spec_from_file_location("plot_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smooth_median_is_d2s_trailing_window(tool):
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    assert tool.smooth_median(values, 3) == [
        statistics.median(values[max(0, i - 2): i + 1]) for i in range(len(values))]
    assert tool.smooth_median(values, 3)[2] == 5.0
    assert tool.smooth_median(values, 1) == values
    assert tool.D2_SMOOTHING_WINDOW == 20


def test_stage_losses_are_grouped_by_kind(tool):
    groups = tool.loss_groups(KNET_LOSSES + ["loss_sem_seg"])
    assert list(groups) == ["total_loss", "cls", "dice", "mask", "seg", "sem_seg"]
    assert groups["mask"] == [("loss_rpn_mask", "kernel init"), ("s0_loss_mask", "stage 0"),
                              ("s1_loss_mask", "stage 1"), ("s2_loss_mask", "stage 2")]
    assert [label for _, label in groups["cls"]] == ["stage 0", "stage 1", "stage 2"]


def _write_metrics(path, evaluations):
    lines = []
    for it in range(19, 400, 20):
        record = {"iteration": it, "lr": 1e-4}
        record.update({k: 1.0 + (it % 60) / 60 for k in KNET_LOSSES})
        lines.append(json.dumps(record))
        if it in evaluations:
            lines.append(json.dumps({"iteration": it, "segm/AP": 12.5, "segm/AP50": 30.25,
                                     "bbox/AP": 10.0}))
    path.write_text("\n".join(lines) + "\n")


def test_losses_figure_panels_and_single_evaluation_labels(tool, tmp_path):
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, evaluations={399})
    series, _ = tool.read_metrics(metrics.read_text().splitlines())
    keys = [k for k in series if tool.is_loss_key(k)]
    fig = tool.plot_losses(series, keys, tmp_path / "losses.png", False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["total_loss", "loss: cls", "loss: dice", "loss: mask", "loss: seg"]
    mask_ax = fig.axes[3]
    smoothed = [ln for ln in mask_ax.get_lines() if ln.get_alpha() is None]
    assert [ln.get_label() for ln in smoothed] == ["kernel init", "stage 0", "stage 1", "stage 2"]
    raw = list(series["loss_rpn_mask"][i] for i in sorted(series["loss_rpn_mask"]))
    assert list(smoothed[0].get_ydata()) == tool.smooth_median(raw, 20) != raw

    eval_keys = [k for k in series if tool.is_eval_key(k)]
    fig = tool.plot_eval_metrics(series, eval_keys, tmp_path / "eval.png")
    segm = [ax for ax in fig.axes if ax.get_title().startswith("segm")][0]
    assert segm.get_title() == "segm (evaluated once, iteration 399)"
    labels = [t.get_text() for t in segm.texts]
    assert labels == ["12.50", "30.25"]
    assert [t.get_text() for t in segm.get_yticklabels()] == ["AP", "AP50"]
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
