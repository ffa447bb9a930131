"""benchmarks/bench_resize.py: its kernel-only switch really turns the matrix form off, and a
tiny run times both forms of the resizes and of a training step on a small generated split."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks import bench_resize
from knet_d2.modeling import resize
from tests.helpers.catalogs import registered_synthetic_splits

PREFIX = "knet_test_bench_resize"
REPO = Path(__file__).resolve().parents[2]


def test_kernel_only_switches_the_matrix_form_off_and_back():
    x = torch.randn(2, 3, 16, 16)
    assert resize._matrices(x, (32, 32)) is not None
    with bench_resize.kernel_only():
        assert resize._matrices(x, (32, 32)) is None
        y = resize.bilinear_resize(x, (32, 32))
    assert torch.equal(y, F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False))
    assert resize._matrices(x, (32, 32)) is not None
    with pytest.raises(RuntimeError), bench_resize.kernel_only():
        raise RuntimeError("inside")
    assert resize._matrices(x, (32, 32)) is not None  # restored after an error too


def test_benchmark_shapes_all_take_the_matrix_form():
    for shape, size in bench_resize.SHAPES:
        for dtype in bench_resize.DTYPES.values():
            assert resize._matrices(torch.zeros(shape, dtype=dtype), size) is not None


def test_tiny_run_writes_both_forms(tmp_path):
    root = tmp_path / "synth"
    with registered_synthetic_splits(root, {"train": 4}, PREFIX) as names:
        train = next(n for n in names if "_panoptic_" in n)
        config = tmp_path / "tiny.yaml"
        config.write_text(
            f'_BASE_: "{REPO}/configs/synthetic/panoptic/knet_R18_tiny.yaml"\n'
            f'DATASETS:\n  TRAIN: ("{train}",)\n'
            "SOLVER:\n  IMS_PER_BATCH: 2\n  AMP:\n    ENABLED: True\n    PRECISION: bf16\n"
        )
        out = tmp_path / "r.json"
        argv = ["--config-file", str(config), "--resize-iters", "1", "--warmup", "1",
                "--iters", "1", "--threads", "1", "--json", str(out)]
        lines = []
        bench_resize.run(bench_resize.parse_args(argv), argv, lines.append)
    record = json.loads(out.read_text())
    assert record["command"].startswith("python -m benchmarks.bench_resize")
    assert len(record["resizes"]) == len(bench_resize.SHAPES) * len(bench_resize.DTYPES) * 2
    for row in record["resizes"] + record["training_steps"]:
        first, second = (row["kernel_ms"], row["matrix_ms"]) if "kernel_ms" in row else (
            row["kernel_s"], row["matrix_s"])
        assert first > 0 and second > 0
        assert row["speedup"] == pytest.approx(first / second)
    (step,) = record["training_steps"]
    assert step["amp"] == "bf16" and step["ims_per_batch"] == 2 and step["steps"] == 1
    assert any("Training step" in line for line in lines)
    with pytest.raises(SystemExit):  # an earlier run's results are never overwritten
        bench_resize.parse_args(["--json", str(out)])
