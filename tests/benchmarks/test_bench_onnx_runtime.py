"""benchmarks/bench_onnx_runtime.py at a tiny size: both runtimes and the graph alone are timed
on the same exported model, the table and the JSON agree, and the script refuses to overwrite."""
import json

import pytest

from benchmarks import bench_onnx_runtime
from tests.helpers.benchmark_flags import check_keep_freed_host_memory_runs_first
from tests.helpers.tables import table_rows


def test_tiny_run(shared_data, tmp_path, capsys):
    js = tmp_path / "r.json"
    argv = ["--threads", "1", "--num-images", "1", "--iters", "1", "--min-size", "64",
            "--max-size", "96", "--data-root", str(shared_data), "--json", str(js)]
    record = bench_onnx_runtime.main(argv)
    out = capsys.readouterr().out
    assert json.loads(js.read_text()) == json.loads(json.dumps(record))
    names = [r["runtime"] for r in record["results"]]
    assert names == ["PyTorch (knet_d2.Predictor)", "ONNX Runtime (knet_onnx)",
                     "ONNX graph alone (run_graph)"]
    base = record["results"][0]["s_per_img"]
    for r in record["results"]:
        assert r["s_per_img"] > 0 and r["img_per_s"] == pytest.approx(1 / r["s_per_img"])
        assert r["vs_pytorch"] == pytest.approx(base / r["s_per_img"])
    # the graph alone is part of knet_onnx's predict, so it cannot take longer
    assert record["results"][2]["s_per_img"] < record["results"][1]["s_per_img"]
    assert [min(s) for s in record["input_sizes"]] == [64]
    rows = {r[0]: r for r in table_rows(out)}
    assert float(rows["ONNX Runtime (knet_onnx)"][3]) == pytest.approx(
        record["results"][1]["vs_pytorch"], rel=0.01)
    with pytest.raises(SystemExit):
        bench_onnx_runtime.parse_args(["--json", str(js)])
    assert "already exists" in capsys.readouterr().err



def test_keep_freed_host_memory_runs_first(shared_data, monkeypatch):
    argv = ["--threads", "1", "--data-root", str(shared_data), "--keep-freed-host-memory"]
    check_keep_freed_host_memory_runs_first(
        monkeypatch, bench_onnx_runtime, "coco_tiny_inputs", argv)
