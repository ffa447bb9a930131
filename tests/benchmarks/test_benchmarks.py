"""Smoke tests of the benchmark scripts bench_inference and bench_train (tiny inputs, 1
iteration) and unit tests of their shared modules (benchmarks.cli / models / data / measure /
report). Timings are not asserted: only that they are reported consistently."""
import math
import re

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.structures import BitMasks, Boxes, Instances
from torch import nn

from benchmarks import bench_inference, bench_train, cli, data, measure, models, report
from tests.helpers.benchmark_flags import check_keep_freed_host_memory_runs_first
from tests.helpers.memory_format import is_channels_last
from tests.helpers.tables import table_row, table_rows

TINY = ["--threads", "1", "--warmup", "0", "--iters", "1", "--min-size", "64",
        "--max-size", "96"]


def _ratio_value(text: str, label: str) -> float:
    """The value cell of the one ratio row (precision | ratio | value | ...) naming ``label``."""
    rows = [r for r in table_rows(text) if label in r[1]]
    assert len(rows) == 1, f"{len(rows)} ratio rows name {label!r} in:\n{text}"
    return float(rows[0][2])


def test_bench_inference_smoke(shared_data, capsys):
    argv = TINY + ["--num-images", "1", "--data-root", str(shared_data),
                   "--models", "knet_instance", "cascade_mask_rcnn"]
    results = bench_inference.main(argv)
    out = capsys.readouterr().out
    assert [(r["model"], r["amp"], r["variant"]) for r in results] == [
        ("knet_instance", "none", "eager"), ("cascade_mask_rcnn", "none", "eager")]
    for r in results:
        assert math.isfinite(r["img_per_s"]) and r["img_per_s"] == pytest.approx(
            1 / r["s_per_img"])
        assert r["peak_mib"] > 0  # the weights alone take memory
        assert r["instances"] == 100  # D2 forced to the workload of a trained model
    assert table_row(out, "K-Net R50 instance")[:3] == ["K-Net R50 instance", "none", "eager"]
    assert table_row(out, "D2 Cascade Mask R-CNN R50-FPN")[:3] == [
        "D2 Cascade Mask R-CNN R50-FPN", "none", "eager"]
    assert "workload check: every D2 model returned 100 instances per image" in out
    label = "K-Net R50 instance (eager) / D2 Cascade Mask R-CNN R50-FPN (eager)"
    expected = results[0]["img_per_s"] / results[1]["img_per_s"]
    assert _ratio_value(out, label) == pytest.approx(expected, abs=0.006)
    assert re.search(r"\| >= 2 +\| (yes|\*\*no\*\*) +\|", out)  # the CPU target
    assert "command: python -m benchmarks.bench_inference --threads 1" in out
    assert "torch " in out


def test_bench_inference_bf16_agreement(shared_data, capsys):
    """A non-fp32 K-Net path is compared with fp32 eager on the same image and printed."""
    argv = TINY + ["--num-images", "1", "--data-root", str(shared_data),
                   "--models", "knet_instance", "--amp", "none", "bf16"]
    results = bench_inference.main(argv)
    out = capsys.readouterr().out
    fp32, bf16 = results
    assert fp32["agreement_with_fp32_eager"] is None
    agree = bf16["agreement_with_fp32_eager"]
    assert set(agree) == {"score_max_abs_diff", "same_class", "mask_px_differ"}
    assert 0 <= agree["score_max_abs_diff"] < 0.5 and 0 <= agree["mask_px_differ"] <= 1
    assert "## Output agreement with fp32 eager (image 0)" in out
    assert ["K-Net R50 instance", "bf16", "eager"] in [
        r[:3] for r in table_rows(out) if r[0] == "K-Net R50 instance"]
    assert "K-Net R50 instance: bf16 / fp32 img/s" in out


def _instances(scores, classes, masks) -> Instances:
    inst = Instances((2, 3))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    inst.pred_masks = torch.tensor(masks)
    return inst


def test_output_agreement_values():
    ref = _instances([0.9, 0.5], [1, 2], [[[1, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    out = _instances([0.8, 0.5], [1, 3], [[[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    pan_ref, pan_out = torch.tensor([[1, 1], [2, 2]]), torch.tensor([[1, 1], [2, 1]])
    got = bench_inference.output_agreement(
        {"instances": out, "panoptic_seg": (pan_out, [])},
        {"instances": ref, "panoptic_seg": (pan_ref, [])})
    assert got["score_max_abs_diff"] == pytest.approx(0.1, abs=1e-6)
    assert got["same_class"] == 0.5
    assert got["mask_px_differ"] == pytest.approx(1 / 12)
    assert got["panoptic_px_differ"] == 0.25
    with pytest.raises(ValueError, match="1 instances vs 2"):
        bench_inference.output_agreement({"instances": out[:1]}, {"instances": ref})


def test_bench_train_smoke(shared_data, capsys):
    argv = TINY + ["--data-root", str(shared_data), "--models", "knet_panoptic",
                   "panoptic_fpn"]
    results = bench_train.main(argv)
    out = capsys.readouterr().out
    assert [r["model"] for r in results] == ["knet_panoptic", "panoptic_fpn"]
    knet, pfpn = results
    assert all(torch.isfinite(torch.tensor(list(r["losses"].values()))).all() for r in results)
    assert "loss_rpn_seg" in knet["losses"] and "loss_sem_seg" in pfpn["losses"]
    parts = ("targets_s", "matching_s", "loss_fwd_s", "loss_bwd_s")
    assert all(math.isfinite(knet[k]) for k in (*parts, "breakdown_step_s"))
    assert knet["share"] == pytest.approx(
        sum(knet[k] for k in parts) / knet["breakdown_step_s"])
    assert "batch: 2 coco_panoptic_sample images" in out
    assert table_row(out, "K-Net R50 panoptic")[:2] == ["K-Net R50 panoptic", "none"]
    assert table_row(out, "D2 PanopticFPN R50")[:2] == ["D2 PanopticFPN R50", "none"]
    label = "step-time speed-up (D2 s/step / K-Net s/step)"
    assert _ratio_value(out, label) == pytest.approx(
        pfpn["s_per_step"] / knet["s_per_step"], abs=0.006)
    assert re.search(r"\| <= 10% +\|", out)


def test_bench_train_times_both_memory_formats_side_by_side(shared_data, capsys):
    """--memory-formats nchw channels_last: each model twice in one run, the channels-last one
    hooked as SOLVER.CHANNELS_LAST hooks it (its backbone sees NHWC batches), with the speed-up
    row computed from the two measured step times."""
    seen = []
    real_prepare = bench_train.prepare

    def spying_prepare(*args, **kwargs):
        step = real_prepare(*args, **kwargs)
        step.model.backbone.register_forward_pre_hook(
            lambda m, a: seen.append(is_channels_last(a[0])))
        return step

    argv = TINY + ["--data-root", str(shared_data), "--models", "mask_rcnn",
                   "--memory-formats", "nchw", "channels_last"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_train, "prepare", spying_prepare)
        results = bench_train.main(argv)
    out = capsys.readouterr().out
    assert [(r["model"], r["memory_format"]) for r in results] == [
        ("mask_rcnn", "nchw"), ("mask_rcnn", "channels_last")]
    nchw, cl = results
    # one memory step and one timed step each, in this order
    assert seen == [False, True, False, True]
    assert nchw["losses"].keys() == cl["losses"].keys()
    rows = [r[:3] for r in table_rows(out) if r[0] == "D2 Mask R-CNN R50-FPN"]
    assert rows == [["D2 Mask R-CNN R50-FPN", "none", "nchw"],
                    ["D2 Mask R-CNN R50-FPN", "none", "channels_last"]]
    assert _ratio_value(out, "channels-last speed-up") == pytest.approx(
        nchw["s_per_step"] / cl["s_per_step"], abs=0.006)
    with pytest.raises(SystemExit):
        bench_train.parse_args(["--channels-last"])
    assert "use --memory-formats channels_last" in capsys.readouterr().err


def test_bench_train_keep_freed_host_memory_runs_first(shared_data, monkeypatch):
    argv = TINY + ["--data-root", str(shared_data), "--keep-freed-host-memory"]
    check_keep_freed_host_memory_runs_first(monkeypatch, bench_train, "panoptic_batch", argv)


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_inference.parse_args(["--device", "cpu", "--cuda-graphs"])
    assert "--cuda-graphs needs --device cuda" in capsys.readouterr().err
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit):
        bench_train.parse_args(["--json", str(existing)])
    assert "already exists" in capsys.readouterr().err
    assert existing.read_text() == "{}"


def test_calibrate_frozen_bn_normalises():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = FrozenBatchNorm2d(8)

        def forward(self, batched):
            return self.bn(self.conv(batched[0]["image"] * 50 + 7))

    net = Net()
    inputs = [{"image": torch.rand(2, 3, 16, 16)}]
    assert models.calibrate_frozen_bn(net, inputs) == 1
    y = net(inputs)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert torch.allclose(y.var(dim=(0, 2, 3)), torch.ones(8), atol=1e-2)
    assert not net.bn._forward_pre_hooks  # hooks removed


def test_peak_memory_cpu_sees_allocation():
    with measure.PeakMemory(torch.device("cpu")) as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    assert mem.method
    if mem.method.startswith("peak RSS"):
        assert 60 <= mem.extra_mib < 1024


def test_section_timer_wraps_and_restores():
    class A:
        def f(self, x):
            return x + 1

    a = A()
    timer = measure.SectionTimer(torch.device("cpu"))
    timer.wrap(a, "f", "f")
    assert a.f(1) == 2 and a.f(2) == 3
    assert timer.counts == {"f": 2} and timer.totals["f"] >= 0
    timer.restore()
    assert "f" not in vars(a) and a.f(1) == 2


def test_d2_batch_layout():
    inst = Instances((4, 4))
    inst.gt_classes = torch.tensor([3, 79, 80, 132])
    inst.gt_masks = BitMasks(torch.eye(4, dtype=torch.bool)[:, None].expand(4, 4, 4).clone())
    inst.gt_boxes = Boxes(torch.arange(16, dtype=torch.float32).view(4, 4))
    sem = torch.tensor([[3, 79, 80, 132], [255, 0, 81, 255]] * 2)
    image = torch.arange(3 * 16, dtype=torch.uint8).view(3, 4, 4)
    batch = [{"image": image, "instances": inst, "sem_seg": sem, "height": 4, "width": 4}]
    (mrcnn,) = data.d2_batch(batch, "mask_rcnn")
    (pfpn,) = data.d2_batch(batch, "panoptic_fpn")
    assert "sem_seg" not in mrcnn
    assert mrcnn["instances"].gt_classes.tolist() == [3, 79]
    assert torch.equal(mrcnn["instances"].gt_boxes.tensor, inst.gt_boxes.tensor[:2])
    assert torch.equal(mrcnn["image"], image.flip(0))  # RGB -> BGR
    assert pfpn["sem_seg"].tolist() == [[0, 0, 1, 53], [255, 0, 2, 255]] * 2


def test_data_root_default_follows_the_environment(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("KNET_BENCH_DATA", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    assert bench_train.parse_args([]).data_root == tmp_path / "d2"
    monkeypatch.setenv("KNET_BENCH_DATA", str(tmp_path / "bench"))
    assert bench_inference.parse_args([]).data_root == tmp_path / "bench"
    assert bench_inference.parse_args(["--data-root", "x"]).data_root.name == "x"
    monkeypatch.delenv("KNET_BENCH_DATA")
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert cli.default_data_root().as_posix() == "datasets"
    (tmp_path / "bench" / "coco_tiny").mkdir(parents=True)
    args = bench_inference.parse_args(["--data-root", str(tmp_path / "bench"), "--threads", "1"])
    with pytest.raises(SystemExit, match=r"bench: folder coco_panoptic_sample/ not found "
                                         r"\(pass --data-root or set \$KNET_BENCH_DATA"):
        cli.setup_run(args)


def test_format_table_is_markdown_with_three_digits():
    text = report.format_table(["model", "img/s", "ms", "met"],
                               [["a", 0.20349, 4933.2, "yes"], ["long name", float("nan"), 7, "-"]])
    lines = text.splitlines()
    assert len(lines) == 4 and set(lines[1]) <= {"|", "-", ":"}
    assert table_rows(text) == [["model", "img/s", "ms", "met"], ["a", "0.203", "4933.2", "yes"],
                           ["long name", "nan", "7", "-"]]
    assert len({len(line) for line in lines}) == 1  # columns aligned
    assert report.fmt_ratio(1.234, 1.5) == ("1.23", ">= 1.5", "**no**")
    assert report.fmt_ratio(2.0, None) == ("2.00", "-", "-")


def test_mask_ap_table_rows_follow_the_keys_and_mark_missing_ones_nan():
    lines = report.mask_ap_table("oracle", {"a": {"AP": 54.41, "AP50": 85.6, "AP75": 55.0,
                                                  "APs": 3.456, "APm": 80.0},
                                            "b": {"AP": 100.0, "AP50": 100.0}})
    assert table_rows("\n".join(lines)) == [["oracle", *report.MASK_AP_HEADER],
                                       ["a", "54.4", "85.6", "55.0", "3.46", "80.0"],
                                       ["b", "100.0", "100.0", "nan", "nan", "nan"]]
