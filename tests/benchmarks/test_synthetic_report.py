"""The synthetic benchmark table (benchmarks/synthetic_report.py): merging task runs, target
verdicts with the colour-only margin, formatting."""
from __future__ import annotations

from benchmarks.synthetic_report import comparison, format_comparison, merge_task_results

THINGS = ["circle", "square"]
CLASSES = THINGS + ["sky"]


def _baselines(colour_pq_th=10.0, colour_ap=35.0, colour_miou=20.0):
    return {
        "colour_only": {"panoptic_seg/PQ_th": colour_pq_th, "segm/AP": colour_ap,
                        "sem_seg/mIoU": colour_miou, "panoptic_seg/PQ-sky": 3.0},
        "majority_stuff": {"panoptic_seg/PQ_th": 0.0, "segm/AP": 0.0, "sem_seg/mIoU": 4.0},
    }


def test_merge_takes_each_group_from_its_own_task():
    summaries = {
        "panoptic": {"results": {"panoptic_seg": {"PQ": 60.0}, "segm": {"AP": 40.0},
                                 "sem_seg": {"mIoU": 70.0, "IoU-sky": 90.0}}},
        "instance": {"results": {"segm": {"AP": 55.0, "AP-circle": 60.0}}},
        "semantic": {"failed": True, "exit_code": 1},
    }
    flat, source = merge_task_results(summaries)
    assert source == {"panoptic_seg": "panoptic", "segm": "instance", "sem_seg": "panoptic"}
    assert flat["segm/AP"] == 55.0 and flat["segm/AP-circle"] == 60.0
    assert flat["sem_seg/mIoU"] == 70.0  # the semantic run failed: the panoptic model's
    summaries["semantic"] = {"results": {"sem_seg": {"mIoU": 80.0}}}
    flat, source = merge_task_results(summaries)
    assert flat["sem_seg/mIoU"] == 80.0 and "sem_seg/IoU-sky" not in flat
    assert source["sem_seg"] == "semantic"


def test_targets_need_the_absolute_value_and_the_margin():
    model = {"panoptic_seg/PQ_th": 51.0, "segm/AP": 54.0, "sem_seg/mIoU": 80.0,
             "panoptic_seg/PQ-sky": 90.0, "panoptic_seg/PQ": float("nan")}
    table = comparison(model, _baselines(), CLASSES, THINGS)
    t = {x["metric"]: x for x in table["targets"]}
    assert t["PQ_th"]["required"] == 50.0 and t["PQ_th"]["met"] is True
    assert t["mask AP"]["required"] == 55.0 and t["mask AP"]["met"] is False  # 35 + 20
    assert t["mIoU"]["met"] is True
    assert table["all_met"] is False
    rows = {r["metric"]: r for r in table["rows"]}
    assert rows["PQ sky"] == {"metric": "PQ sky", "key": "panoptic_seg/PQ-sky", "knet": 90.0,
                              "colour_only": 3.0, "majority_stuff": None}
    assert "PQ" not in rows  # NaN everywhere: not measured
    text = format_comparison(table)
    assert "| mask AP >= 50 and >= colour-only + 20 | 54.0" in text and "**no**" in text
    assert "| PQ sky" in text


def test_missing_model_metric_is_not_run():
    table = comparison({"sem_seg/mIoU": 90.0}, _baselines(), CLASSES, THINGS)
    t = {x["metric"]: x["met"] for x in table["targets"]}
    assert t == {"PQ_th": None, "mask AP": None, "mIoU": True}
    assert table["all_met"] is False
    assert "not run" in format_comparison(table)
