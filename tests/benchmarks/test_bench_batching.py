"""Smoke tests of the batch / scaling / demo-folder measurements (bench_inference
--batch-sizes / --user-options, bench_scaling, bench_demo_folder) at tiny sizes, and unit tests
of benchmarks.batching. Timings are not asserted: only that the tables and JSON hold one row per
measured configuration and ratios computed from the measured numbers."""
import json
import logging

import pytest
import torch
from torch import nn

from benchmarks import batching, bench_demo_folder, bench_inference, bench_scaling, bench_sections
from knet_d2.collect_env import machine_line
from tests.helpers.tables import table_rows

TINY = ["--threads", "1", "--warmup", "0", "--iters", "1", "--min-size", "64",
        "--max-size", "96"]


def _cells(text: str, label: str) -> list:
    return next(r for r in table_rows(text) if label in r)


def test_batch_indices_cycle_and_passes():
    assert batching.batch_indices(0, 4, 3) == [0, 1, 2, 0]
    assert batching.batch_indices(1, 2, 3) == [2, 0]
    assert batching.batch_indices(5, 1, 3) == [2]
    assert [batching.calls_per_pass(4, b) for b in (1, 2, 4, 8)] == [4, 2, 1, 1]
    assert batching.check_batch_sizes([1, 2, 2]) == "--batch-sizes has duplicates: [1, 2, 2]"
    assert "must all be >= 1" in batching.check_batch_sizes([0, 2])
    assert batching.check_batch_sizes([1, 8]) is None


def test_batch_sizes_cli_errors(capsys):
    with pytest.raises(SystemExit):
        bench_inference.parse_args(["--batch-sizes", "1", "0"])
    assert "--batch-sizes must all be >= 1, got [1, 0]" in capsys.readouterr().err
    assert bench_inference.parse_args([]).batch_sizes == [1]  # today's behaviour by default


def _result(model, amp, variant, bs, img_per_s):
    return {"model": model, "amp": amp, "variant": variant, "batch_size": bs,
            "img_per_s": img_per_s}


def test_target_rows_from_measured_numbers():
    results = [
        _result("knet_instance", "none", "eager", 1, 0.5),
        _result("knet_instance", "bf16", "eager", 1, 0.9),  # benchmark autocast: not a user path
        _result("knet_instance", "bf16", "options", 1, 0.6),
        _result("cascade_mask_rcnn", "none", "eager", 1, 0.2),
        _result("knet_instance", "none", "eager", 4, 0.45),
        _result("cascade_mask_rcnn", "none", "eager", 4, 0.25),
    ]
    rows = {r[0]: r[1:] for r in batching.target_rows(results)}
    assert rows["K-Net R50 instance / Cascade Mask R-CNN, batch 1"] == [
        "fp32 eager / fp32 eager", "2.50", ">= 2", "yes"]
    assert rows["K-Net R50 instance best user-visible option / Cascade, batch 1"] == [
        "bf16 options / fp32 eager", "3.00", ">= 2.5", "yes"]
    assert rows["K-Net R50 instance per-image img/s, batch 4 / batch 1"] == [
        "fp32 eager", "0.90", ">= 1", "**no**"]
    assert rows["K-Net R50 panoptic / PanopticFPN, batch 1"][1] == "not measured"
    ratios = {(r[0], r[1]): r[2] for r in batching.batch_ratio_rows(results)}
    assert ratios[4, "K-Net R50 instance (none, eager): img/s batch 4 / batch 1"] == "0.90"
    vs_cascade = "K-Net R50 instance (none, eager) / D2 Cascade Mask R-CNN R50-FPN (none, eager)"
    assert (ratios[1, vs_cascade], ratios[4, vs_cascade]) == ("2.50", "1.80")
    assert (1, "K-Net R50 instance (bf16, options) / D2 Cascade Mask R-CNN R50-FPN "
               "(none, eager)") not in ratios  # D2 rows of the same precision only


class _KernelModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward_kernels(self, x):
        return self.conv(x)


def test_user_options_model_is_a_wrapped_copy():
    model = _KernelModel()
    user = batching.user_options_model(model, "bf16", compile=False)
    assert "forward_kernels" in vars(user) and "forward_kernels" not in vars(model)
    assert torch.equal(user.conv.weight, model.conv.weight)
    x = torch.rand(1, 3, 5, 5)
    out = user.forward_kernels(x)
    assert out.dtype == torch.float32  # autocast inside, cast back to fp32 after
    assert torch.allclose(out, model.forward_kernels(x), atol=0.05)


def test_bench_inference_batch_sizes(shared_data, tmp_path, capsys):
    path = tmp_path / "batches.json"
    argv = TINY + ["--num-images", "1", "--data-root", str(shared_data), "--batch-sizes", "1",
                   "2", "--models", "knet_instance", "--json", str(path)]
    results = bench_inference.main(argv)
    out = capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved["batch_sizes"] == [1, 2] and saved["results"] == json.loads(json.dumps(results))
    # the run header, printed and stored: the machine line is collect_env --short's
    assert saved["machine"] == machine_line() and f"machine: {saved['machine']}" in out
    assert saved["command"] == "python -m benchmarks.bench_inference " + " ".join(argv)
    assert f"commit: {saved['commit']}" in out and len(saved["commit"].split("+")[0]) == 40
    assert [(r["model"], r["batch_size"]) for r in results] == [
        ("knet_instance", 1), ("knet_instance", 2)]
    for r in results:
        assert r["img_per_s"] == pytest.approx(r["batch_size"] / r["s_per_batch"])
        assert r["s_per_img"] == pytest.approx(r["s_per_batch"] / r["batch_size"])
        assert r["instances"] == 100  # every image of a batch has its outputs
        assert r["peak_mib"] > 0
    table = [row[:4] for row in table_rows(out) if row[0] == "K-Net R50 instance"]
    assert table == [["K-Net R50 instance", "none", "eager", "1"],
                     ["K-Net R50 instance", "none", "eager", "2"]]
    by = {(r["model"], r["batch_size"]): r["img_per_s"] for r in results}
    label = "K-Net R50 instance (none, eager): img/s batch 2 / batch 1"
    gain = by["knet_instance", 2] / by["knet_instance", 1]
    assert float(_cells(out, label)[2]) == pytest.approx(gain, abs=0.006)
    assert [label, f"{gain:.2f}", "-", "-"] in [row[1:] for row in saved["batch_ratios"]]
    # (K-Net / D2 ratios per batch size: test_target_rows_from_measured_numbers; D2 models are
    # slow even at tiny sizes, 100 masks pasted at the original image size)
    targets = {r[0]: r[2] for r in saved["cpu_targets"]}  # no Cascade, no batch 4 measured
    assert targets["K-Net R50 instance / Cascade Mask R-CNN, batch 1"] == "not measured"
    assert targets["K-Net R50 instance per-image img/s, batch 4 / batch 1"] == "not measured"
    assert "## CPU targets (met: yes / **no**)" in out


def test_bench_inference_user_options(shared_data, capsys):
    argv = TINY + ["--num-images", "1", "--data-root", str(shared_data), "--models",
                   "knet_instance", "--amp", "none", "bf16", "--user-options"]
    results = bench_inference.main(argv)
    out = capsys.readouterr().out
    assert [(r["amp"], r["variant"]) for r in results] == [
        ("none", "eager"), ("bf16", "eager"), ("bf16", "options")]
    options = results[2]
    assert set(options["agreement_with_fp32_eager"]) == {
        "score_max_abs_diff", "same_class", "mask_px_differ"}
    assert options["agreement_with_fp32_eager"]["score_max_abs_diff"] < 0.5
    best = max((r for r in results if r["variant"] == "options" or r["amp"] == "none"),
               key=lambda r: r["img_per_s"])
    row = _cells(out, "K-Net R50 instance best user-visible option / Cascade, batch 1")
    precision = batching.AMP_TO_PRECISION[best["amp"]]
    assert row[1:3] == [f"{precision} {best['variant']} / fp32 eager", "not measured"]
    assert "'options' variants (knet_d2.inference_options" in out


def test_bench_scaling_smoke(shared_data, tmp_path, capsys):
    assert bench_scaling.min_size_for(1333) == 800 and bench_scaling.min_size_for(512) == 307
    js, png = tmp_path / "s.json", tmp_path / "s.png"
    argv = TINY + ["--num-images", "1", "--data-root", str(shared_data), "--sizes", "64", "96",
                   "--proposals", "100", "30", "--no-cascade", "--json", str(js),
                   "--plot", str(png)]
    results = bench_scaling.main(argv)
    out = capsys.readouterr().out
    assert [(r["proposals"], r["long_side"]) for r in results] == [
        (100, 64), (30, 64), (100, 96), (30, 96)]
    for r in results:  # the first coco_tiny image is 4:3: short side = min size, long <= cap
        assert [min(s) for s in r["input_sizes"]] == [r["min_size"]]
        assert max(r["input_sizes"][0]) <= r["long_side"]
    assert json.loads(js.read_text())["results"][0]["label"] == \
        "K-Net R50 instance, 100 proposals"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    small, big = results[0], results[2]
    rows = [r for r in table_rows(out) if r[:2] == ["K-Net R50 instance, 100 proposals", "96"]]
    assert len(rows) == 2  # one measurement row, one growth row
    assert float(rows[1][2]) == pytest.approx(big["s_per_img"] / small["s_per_img"], rel=0.01)
    with pytest.raises(SystemExit):
        bench_scaling.parse_args(["--plot", str(png)])
    assert "already exists" in capsys.readouterr().err


def test_bench_demo_folder_smoke(shared_data, tmp_path, capsys):
    out_dir = tmp_path / "drawings"
    argv = TINY + ["--num-images", "3", "--batch-size", "2", "--data-root", str(shared_data),
                   "--output-dir", str(out_dir)]
    rendering_log = logging.getLogger("knet_d2.rendering")
    level = rendering_log.level
    before, after = bench_demo_folder.main(argv)
    assert rendering_log.level == level  # quieted for the run only, not for later callers
    out = capsys.readouterr().out
    assert before["batch_histogram"] == {1: 3} and before["model_calls"] == 3
    assert sum(k * v for k, v in after["batch_histogram"].items()) == 3
    assert max(after["batch_histogram"]) <= 2
    assert after["model_calls"] == sum(after["batch_histogram"].values())
    assert len(list((out_dir / "config1_iter0").glob("*.jpg"))) == 3  # every image drawn
    row = _cells(out, "after: batch 2, fp32")
    assert row[3] == str(after["model_calls"])
    ratio = after["img_per_s"] / before["img_per_s"]
    assert f"after / before img/s: {ratio:.2f}" in out
    with pytest.raises(SystemExit):
        bench_demo_folder.parse_args(["--output-dir", str(out_dir)])
    assert "already exists; pass a new folder" in capsys.readouterr().err


def test_demo_folder_uniform_size_images(shared_data):
    from PIL import Image

    files = bench_demo_folder.folder_images(shared_data, 3, uniform_size=True)
    assert len(files) == 3 and {Image.open(f).size for f in files} == {(640, 480)}
    mixed = bench_demo_folder.folder_images(shared_data, 3, uniform_size=False)
    assert mixed == sorted((shared_data / "coco_tiny" / "val2017").glob("*.jpg"))[:3]
    with pytest.raises(SystemExit, match="only 20 images of the most common size"):
        bench_demo_folder.folder_images(shared_data, 21, uniform_size=True)


def test_compile_combinations_count_padded_batch_shapes():
    from types import SimpleNamespace

    inputs = [{"image": torch.zeros(3, h, w)} for h, w in [(60, 90), (64, 70), (100, 40)]]
    model = SimpleNamespace(size_divisibility=32)

    def runner(bs, amp="none"):
        return SimpleNamespace(key="knet_instance", amp=amp, batch_size=bs, model=model,
                               inputs=inputs)

    # batch 1: (64, 96), (64, 96), (128, 64) -> 2 shapes; batch 2: [0, 1] (64, 96),
    # [2, 0] (128, 96) -> 2; batch 4: [0, 1, 2, 0] (128, 96) -> 1; bf16 batch 1: 2 more
    assert batching.compile_combinations([runner(1)], 3) == 2
    assert batching.compile_combinations([runner(1), runner(2), runner(4)], 3) == 5
    assert batching.compile_combinations([runner(1), runner(1, "bf16")], 3) == 4


def test_bench_sections_smoke(shared_data, tmp_path, capsys):
    js = tmp_path / "sections.json"
    argv = TINY + ["--num-images", "2", "--data-root", str(shared_data), "--models",
                   "knet_instance", "--modes", "off", "auto", "--batch-sizes", "1", "2",
                   "--json", str(js)]
    rows = bench_sections.main(argv)
    out = capsys.readouterr().out
    assert [(r["mode"], r["batch"]) for r in rows] == [("off", 1), ("auto", 1), ("off", 2),
                                                       ("auto", 2)]
    for r in rows:
        secs = r["sections_ms"]
        assert list(secs) == list(bench_sections.SECTIONS)
        assert sum(secs.values()) == pytest.approx(r["ms_per_image"])
        assert all(secs[k] > 0 for k in ("resnet", "fpn", "neck", "update stages"))
        # channels-last changes float rounding only
        assert r["difference"]["mask pixels differ"] <= 1e-3
    assert rows[0]["difference"] == {"mask pixels differ": 0.0, "max |score diff|": 0.0}
    total = _cells(out, "total")
    assert float(total[1]) == pytest.approx(rows[0]["ms_per_image"], rel=0.01)
    saved = json.loads(js.read_text())
    assert saved["rows"][3]["mode"] == "auto" and saved["commit"]
    with pytest.raises(SystemExit):
        bench_sections.parse_args(["--json", str(js)])
    assert "already exists" in capsys.readouterr().err
