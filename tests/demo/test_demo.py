"""Tests of demo/demo.py, demo/predictor.py and demo/video_io.py (fast: a stand-in predictor
replaces the model).

``predictor`` and ``video_io`` are the demo's own modules: pytest puts ``demo/`` on the path
(``pythonpath`` in pyproject.toml), as running ``python demo/demo.py`` does.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import multiprocessing
import queue
import subprocess
import sys
from pathlib import Path
from typing import List

import cv2
import numpy as np
import predictor
import pytest
import video_io
from detectron2.data import MetadataCatalog

from tests.helpers.fake_predictor import STUFF_FIRST, THINGS_FIRST, FakePredictor, dataset_cfg
from tests.helpers.paths import REPO_ROOT
from tests.helpers.photos import small_photo, write_image

DEMO_DIR = REPO_ROOT / "demo"


def _demo(dataset: str = STUFF_FIRST, **kwargs) -> predictor.VisualizationDemo:
    cfg = dataset_cfg(dataset)
    return predictor.VisualizationDemo(cfg, predictor=FakePredictor(cfg), **kwargs)


@pytest.fixture(scope="module")
def cli():
    """demo/demo.py loaded as a module (it shares the ``predictor`` module imported above)."""
    spec = importlib.util.spec_from_file_location("knet_demo_cli", DEMO_DIR / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VisualizationDemo is predictor.VisualizationDemo
    return module


@pytest.fixture
def fake_model(monkeypatch):
    """Make VisualizationDemo build FakePredictor instead of knet_d2.Predictor."""
    monkeypatch.setattr(predictor, "Predictor", FakePredictor)


@pytest.fixture
def demo_log(caplog):
    """Capture the log of the demo and of knet_d2 (the renderer, io_paths) even when D2's
    setup_logger turned propagation off."""
    log = logging.getLogger("knet_d2")
    log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="knet_d2")
    yield caplog
    log.removeHandler(caplog.handler)


@pytest.fixture
def cfg_file(tmp_path) -> Path:
    path = tmp_path / "demo_cfg.yaml"
    weights = tmp_path / "model.pth"  # never loaded: fake_model replaces DefaultPredictor
    weights.write_bytes(b"")
    path.write_text(
        f'MODEL:\n  META_ARCHITECTURE: "KNet"\n  DEVICE: "cpu"\n  WEIGHTS: "{weights}"\n'
        f'DATASETS:\n  TEST: ("{STUFF_FIRST}",)\n'
    )
    return path


def _count_frames(path: Path) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


# ------------------------------------------------------------------------------------ CLI: images
def test_two_images_into_new_nested_dir(cli, fake_model, cfg_file, tmp_path):
    a = write_image(tmp_path / "in" / "a.jpg", small_photo())
    b = write_image(tmp_path / "in" / "b.png", small_photo(which="coffee"))
    out = tmp_path / "new" / "nested" / "vis"
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(a), str(b), "--output", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png"]
    for name in ("a.jpg", "b.png"):
        drawn = cv2.imread(str(out / name))
        assert drawn is not None and drawn.shape == (72, 96, 3)
    # something was drawn: the output is not the input
    coffee = small_photo(which="coffee")
    assert np.abs(cv2.imread(str(out / "b.png")).astype(int) - coffee).mean() > 1


def test_single_output_file_and_glob(cli, fake_model, cfg_file, tmp_path):
    write_image(tmp_path / "in" / "a.jpg", small_photo())
    out = tmp_path / "deep" / "result.png"
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(tmp_path / "in" / "*.jpg"),
                   "--output", str(out)])
    assert rc == 0 and out.is_file()


def test_corrupt_file_in_folder_is_reported_and_rest_written(
    cli, fake_model, cfg_file, tmp_path, demo_log, capsys
):
    folder = tmp_path / "imgs"
    write_image(folder / "good1.jpg", small_photo())
    write_image(folder / "good2.png", small_photo(which="coffee"))
    (folder / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(2048))
    (folder / "notes.txt").write_text("not an image")  # not picked up from a directory
    out = tmp_path / "out"
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(folder), "--output", str(out)])
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["good1.jpg", "good2.png"]
    errors = [r.getMessage() for r in demo_log.records if r.levelno >= logging.ERROR]
    assert any("broken.jpg" in m for m in errors), errors
    assert "2 written, 1 failed" in capsys.readouterr().out


def test_output_onto_input_is_refused(cli, fake_model, cfg_file, tmp_path):
    a = write_image(tmp_path / "in" / "a.jpg", small_photo())
    before = a.read_bytes()
    assert cli.main(["--config-file", str(cfg_file), "--input", str(a), "--output", str(a)]) == 2
    folder = a.parent
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(folder), "--output", str(folder)])
    assert rc == 2
    assert a.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg"]


def test_confidence_threshold_changes_cli_output(cli, fake_model, cfg_file, tmp_path):
    a = write_image(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
    outs = {}
    for thr in ("0.0", "0.95"):
        out = tmp_path / f"thr{thr}" / "a.png"
        rc = cli.main(["--config-file", str(cfg_file), "--input", str(a), "--output", str(out),
                       "--task", "instance", "--confidence-threshold", thr])
        assert rc == 0
        outs[thr] = cv2.imread(str(out)).astype(int)
    assert outs["0.95"].max() == 0  # every instance scores below 0.95: nothing drawn
    assert outs["0.0"].max() > 0


def test_demo_script_runs_from_another_directory(tmp_path):
    res = subprocess.run(
        [sys.executable, str(DEMO_DIR / "demo.py"), "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    for flag in ("--config-file", "--input", "--video-input", "--webcam", "--output",
                 "--confidence-threshold", "--opts", "--task"):
        assert flag in res.stdout


# ------------------------------------------------------------------------------------ video
def test_video_in_video_out(cli, fake_model, cfg_file, tmp_path):
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 64))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((64, 64, 3), 30 * i, np.uint8))
    writer.release()
    out_dir = tmp_path / "videos" / "out"
    rc = cli.main(["--config-file", str(cfg_file), "--video-input", str(src),
                   "--output", str(out_dir)])
    assert rc == 0
    written = list(out_dir.iterdir())
    assert len(written) == 1 and written[0].stem == "clip"
    frames = _count_frames(written[0])
    assert len(frames) == 5
    assert all(f.shape == (64, 64, 3) for f in frames)


def test_video_parallel_workers_and_refusals(cli, fake_model, cfg_file, tmp_path):
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (48, 32))
    for i in range(7):
        writer.write(np.full((32, 48, 3), 20 * i, np.uint8))
    writer.release()
    before = src.read_bytes()
    # the output file named like the input is refused before anything is written
    rc = cli.main(["--config-file", str(cfg_file), "--video-input", str(src), "--output", str(src)])
    assert rc == 2 and src.read_bytes() == before
    # --parallel: AsyncPredictor with one CPU worker process, frames come back in order
    out = tmp_path / "par" / "clip_vis.avi"
    children_before = set(multiprocessing.active_children())
    rc = cli.main(["--config-file", str(cfg_file), "--video-input", str(src), "--output", str(out),
                   "--parallel"])
    assert rc == 0
    assert len(_count_frames(out)) == 7
    # the worker processes are stopped when the demo returns, not left running until exit
    assert set(multiprocessing.active_children()) <= children_before


def test_no_output_without_display_is_a_clear_error(cli, fake_model, cfg_file, tmp_path,
                                                    monkeypatch):
    a = write_image(tmp_path / "a.jpg", small_photo())
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit, match="--output"):
        cli.main(["--config-file", str(cfg_file), "--input", str(a)])


def test_run_on_video_draws_every_frame_stuff_first():
    demo = _demo(STUFF_FIRST, confidence_threshold=0.1)
    frames = [small_photo(48, 64) for _ in range(3)]
    out = list(demo.run_on_video(frames))
    assert len(out) == 3 and all(o.shape == (48, 64, 3) for o in out)
    inst_demo = _demo(STUFF_FIRST, task="instance", confidence_threshold=0.1)
    assert len(list(inst_demo.run_on_video(frames))) == 3


def test_codec_probe_skips_unknown_fourcc():
    cands = (("ZZZZ", ".mkv"), ("MJPG", ".avi"))
    assert video_io.probe_video_codec((64, 48), cands) == ("MJPG", ".avi")


def test_codec_probe_falls_back_when_writer_gives_empty_file(monkeypatch):
    assert video_io.probe_video_codec((32, 32), (("mp4v", ".mp4"),)) == ("mp4v", ".mp4")
    real_writer = cv2.VideoWriter
    broken = cv2.VideoWriter_fourcc(*"mp4v")

    class OpensButWritesNothing:
        """What OpenCV without an encoder can do: report opened, leave an empty file."""

        def __init__(self, path, fourcc, *args):
            self.path = path

        def isOpened(self):
            return True

        def write(self, frame):
            pass

        def release(self):
            Path(self.path).touch()

    def fake_writer(path, fourcc, *args):
        if fourcc == broken:
            return OpensButWritesNothing(path, fourcc)
        return real_writer(path, fourcc, *args)

    monkeypatch.setattr(cv2, "VideoWriter", fake_writer)
    cands = (("mp4v", ".mp4"), ("MJPG", ".avi"))
    assert video_io.probe_video_codec((32, 32), cands) == ("MJPG", ".avi")
    with pytest.raises(RuntimeError, match="cannot write video"):
        video_io.probe_video_codec((32, 32), (("mp4v", ".mp4"), ("ZZZZ", ".mkv")))


def test_codec_probe_prefers_requested_container():
    cands = (("MJPG", ".avi"), ("mp4v", ".mp4"))
    assert video_io.probe_video_codec((32, 32), cands, prefer_suffix=".mp4") == ("mp4v", ".mp4")


def test_run_on_video_non_contiguous_thing_ids():
    for task in ("panoptic", "instance", "semantic"):
        demo = _demo(STUFF_FIRST, task=task, confidence_threshold=0.0)
        assert len(list(demo.run_on_video([small_photo(48, 64)] * 2))) == 2


def test_visualization_demo_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown task"):
        predictor.VisualizationDemo(dataset_cfg(), predictor=lambda x: {}, task="boxes")
    with pytest.raises(ValueError, match="--parallel runs one image per worker"):
        predictor.VisualizationDemo(dataset_cfg(), parallel=True, batch_size=2)
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        predictor.VisualizationDemo(dataset_cfg(), predictor=lambda x: {}, batch_size=0)


# ------------------------------------------------------------------------------------ async
@pytest.mark.parametrize("enabled", [False, True])
def test_demo_applies_keep_freed_host_memory_from_the_config(
    cli, fake_model, cfg_file, tmp_path, monkeypatch, enabled
):
    """KEEP_FREED_HOST_MEMORY in the config (here from --opts) is applied as train_net.py
    applies it; without it malloc is left alone."""
    calls = []
    monkeypatch.setattr(cli, "keep_freed_host_memory", lambda: calls.append(1) or True)
    a = write_image(tmp_path / "a.png", small_photo())
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(a), "--output",
                   str(tmp_path / "out.png"), "--opts", "KEEP_FREED_HOST_MEMORY", str(enabled)])
    assert rc == 0 and (tmp_path / "out.png").is_file()
    assert calls == ([1] if enabled else [])


@pytest.mark.parametrize("enabled", [False, True])
def test_async_predictor_worker_applies_keep_freed_host_memory_first(monkeypatch, enabled):
    """A spawned worker starts with a fresh malloc: it applies the config key itself, before
    its predictor is built."""
    events = []
    monkeypatch.setattr(predictor, "keep_freed_host_memory", lambda: events.append("malloc"))

    def factory(cfg):
        events.append("predictor")
        return FakePredictor(cfg)

    cfg = dataset_cfg(THINGS_FIRST)
    cfg.KEEP_FREED_HOST_MEMORY = enabled
    tasks, results = queue.Queue(), queue.Queue()
    tasks.put((1, np.zeros((8, 8, 3), np.uint8)))
    tasks.put(predictor._StopToken())
    predictor._worker_loop(cfg, factory, tasks, results)
    assert events == (["malloc", "predictor"] if enabled else ["predictor"])
    idx, out = results.get_nowait()
    assert idx == 1 and out["sem_seg"].shape[1:] == (8, 8)


def test_async_predictor_cpu_worker_keeps_order_and_reports_errors():
    cfg = dataset_cfg(THINGS_FIRST)
    pred = predictor.AsyncPredictor(cfg, num_gpus=0, predictor_factory=FakePredictor,
                                    result_timeout=240)
    try:
        sizes = [(20, 30), (24, 16), (32, 32)]
        for h, w in sizes:
            pred.put(np.zeros((h, w, 3), np.uint8))
        assert len(pred) == 3
        got = [pred.get()["sem_seg"].shape[1:] for _ in sizes]
        assert [tuple(s) for s in got] == sizes
        assert pred(np.zeros((8, 8, 3), np.uint8))["panoptic_seg"][0].shape == (8, 8)
        # a failing prediction is reported with the worker's error, not a hang
        with pytest.raises(RuntimeError, match="boom"):
            pred(np.zeros((1, 8, 3), np.uint8))
        assert pred(np.zeros((4, 4, 3), np.uint8))["sem_seg"].shape[1:] == (4, 4)
    finally:
        pred.shutdown()
    assert not any(p.is_alive() for p in pred.procs)


def test_async_predictor_reorders_results():
    """Results arriving out of order (several GPUs) come out in ``put`` order."""
    pred = predictor.AsyncPredictor.__new__(predictor.AsyncPredictor)
    pred.result_queue = queue.Queue()
    pred.procs, pred.result_timeout = [], None
    pred.put_idx, pred.get_idx, pred._ready_idx, pred._ready = 4, 0, [], []
    for idx in (3, 1, 4, 2):
        pred.result_queue.put((idx, {"idx": idx}))
    assert [pred.get()["idx"] for _ in range(4)] == [1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="without a pending put"):
        pred.get()


# ------------------------------------------------------------------------------------ tools
# tools/visualize_data.py and tools/plot_metrics.py have D2-like command lines:
#   visualize_data.py --source annotation --config-file FILE --output-dir DIR
#   plot_metrics.py RUN_DIR_OR_METRICS_JSON --output-dir DIR
def _tool(name: str) -> Path:
    path = REPO_ROOT / "tools" / name
    assert path.is_file(), f"tools/{name} is missing"
    return path


def test_visualize_data_on_hand_made_dataset(tmp_path, monkeypatch):
    import runpy

    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    tool = _tool("visualize_data.py")
    name = "knet_demo_test_handmade_instances"
    dicts = []
    for i, which in enumerate(("astronaut", "coffee")):
        img = write_image(tmp_path / "imgs" / f"{which}.jpg", small_photo(64, 64, which))
        x0, y0 = 8 + 8 * i, 10
        dicts.append({
            "file_name": str(img), "image_id": i, "height": 64, "width": 64,
            "annotations": [{
                "bbox": [x0, y0, 30, 24], "bbox_mode": BoxMode.XYWH_ABS, "category_id": i,
                "iscrowd": 0,
                "segmentation": [[x0, y0, x0 + 30, y0, x0 + 30, y0 + 24, x0, y0 + 24]],
            }],
        })
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    MetadataCatalog.get(name).set(
        thing_classes=["a", "b", "c", "d"],
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2, 4: 3},
    )
    cfg_path = tmp_path / "vis.yaml"
    base = REPO_ROOT / "configs" / "synthetic" / "instance" / "knet_R18_tiny.yaml"
    cfg_path.write_text(
        f'_BASE_: "{base}"\nDATASETS:\n  TRAIN: ("{name}",)\n  TEST: ("{name}",)\n'
        'INPUT:\n  DATASET_MAPPER_NAME: "knet_instance"\n'
    )
    out = tmp_path / "vis" / "annotation"
    monkeypatch.setattr(sys, "argv", [str(tool), "--source", "annotation", "--config-file",
                                      str(cfg_path), "--output-dir", str(out)])
    try:
        runpy.run_path(str(tool), run_name="__main__")
    except SystemExit as e:
        assert e.code in (None, 0), e
    images = [p for p in out.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert len(images) == 2, images
    assert all(cv2.imread(str(p)) is not None for p in images)


def test_plot_metrics_writes_pngs(tmp_path):
    import json

    tool = _tool("plot_metrics.py")
    run = tmp_path / "run"
    run.mkdir()
    lines = []
    for it in range(19, 200, 20):
        lines.append(json.dumps({
            "iteration": it, "total_loss": 3.0 - it / 100, "loss_cls": 1.0 - it / 400,
            "loss_mask": 0.8 - it / 500, "loss_dice": 1.2 - it / 300, "lr": 1e-4,
            "data_time": 0.01, "time": 0.2,
        }))
        if it in (99, 199):
            lines.append(json.dumps({"iteration": it, "panoptic_seg/PQ": it / 10,
                                     "segm/AP": it / 20}))
    lines.append('{"iteration": 219, "total_lo')  # a run killed while writing
    (run / "metrics.json").write_text("\n".join(lines) + "\n")
    out = tmp_path / "plots" / "new"

    def call(*args):
        return subprocess.run([sys.executable, str(tool), *map(str, args)], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)

    res = call(run, "--output-dir", out)
    assert res.returncode == 0, res.stdout + res.stderr
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) >= 2, pngs  # losses and evaluation metrics
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    res = call(tmp_path / "missing", "--output-dir", out)
    assert res.returncode != 0 and "metrics.json" in res.stdout + res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.json").write_text("\n\nnot json\n")
    res = call(empty, "--output-dir", out)
    assert res.returncode != 0
