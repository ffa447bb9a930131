"""benchmarks/bench_onnx_runtime.py at a tiny size: both runtimes and the graph alone are timed
on the same exported model, the table and the JSON agree, and the script refuses to overwrite."""
import json

import pytest

from benchmarks import bench_onnx_runtime
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
    """The flag applies KEEP_FREED_HOST_MEMORY before any image or model exists, and a C
    library that refuses it stops the run instead of measuring without it."""
    calls = []

    class Stop(Exception):
        pass

    def no_inputs(*a, **k):
        raise Stop(list(calls))

    monkeypatch.setattr(bench_onnx_runtime, "coco_tiny_inputs", no_inputs)
    monkeypatch.setattr(bench_onnx_runtime, "keep_freed_host_memory",
                        lambda: calls.append(1) or True)
    argv = ["--threads", "1", "--data-root", str(shared_data), "--keep-freed-host-memory"]
    with pytest.raises(Stop) as stop:
        bench_onnx_runtime.main(argv)
    assert stop.value.args[0] == [1]
    calls.clear()
    with pytest.raises(Stop) as stop:  # without the flag malloc is left alone
        bench_onnx_runtime.main(argv[:-1])
    assert stop.value.args[0] == []
    monkeypatch.setattr(bench_onnx_runtime, "keep_freed_host_memory", lambda: False)
    with pytest.raises(SystemExit, match="refused"):
        bench_onnx_runtime.main(argv)
