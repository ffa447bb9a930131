"""Tests of demo/demo.py and demo/predictor.py (fast: a stand-in predictor replaces the model).

One test runs a real, randomly initialised tiny K-Net when ``configs/synthetic/panoptic/*.yaml``
exists.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import os
import queue
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "demo"
if str(DEMO_DIR) not in sys.path:
    sys.path.insert(0, str(DEMO_DIR))

import predictor  # noqa: E402  (demo/predictor.py)

THINGS_FIRST = "knet_demo_test_things_first"
STUFF_FIRST = "knet_demo_test_stuff_first"


def _register_metadata() -> None:
    MetadataCatalog.get(THINGS_FIRST).set(
        thing_classes=["person", "car"],
        stuff_classes=["person", "car", "sky"],
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        stuff_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2},
    )
    # ADE20K-like: stuff classes come first, thing ids are 2 and 3.
    MetadataCatalog.get(STUFF_FIRST).set(
        thing_classes=["person", "car"],
        stuff_classes=["sky", "grass", "person", "car"],
        thing_dataset_id_to_contiguous_id={10: 2, 20: 3},
        stuff_dataset_id_to_contiguous_id={1: 0, 2: 1, 10: 2, 20: 3},
    )


_register_metadata()


class FakePredictor:
    """Stand-in for D2's DefaultPredictor: fixed outputs in the layout of the cfg's dataset.

    Top-left block: thing "person" with score 0.9; bottom-right block: thing "car" with score 0.2;
    the rest: the first stuff class. Raises on 1-pixel-high images. Picklable (AsyncPredictor
    workers build it from the cfg).
    """

    def __init__(self, cfg) -> None:
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.thing_ids = sorted(meta.thing_dataset_id_to_contiguous_id.values())
        all_ids = sorted(meta.stuff_dataset_id_to_contiguous_id.values())
        self.stuff_id = [i for i in all_ids if i not in self.thing_ids][0]
        self.num_classes = len(all_ids)
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Dict[str, object]:
        self.calls += 1
        h, w = image.shape[:2]
        if h == 1:
            raise ValueError("boom: 1-pixel-high image")
        high = torch.zeros(h, w, dtype=torch.bool)
        high[2 : h // 2 - 2, 2 : w // 2 - 2] = True
        low = torch.zeros(h, w, dtype=torch.bool)
        low[h // 2 + 2 : h - 2, w // 2 + 2 : w - 2] = True
        inst = Instances((h, w))
        inst.pred_masks = torch.stack([high, low])
        inst.scores = torch.tensor([0.9, 0.2])
        inst.pred_classes = torch.tensor(self.thing_ids[:2])
        inst.pred_boxes = Boxes(torch.zeros(2, 4))  # mask models may emit zero boxes
        seg = torch.ones(h, w, dtype=torch.int32)
        seg[high] = 2
        seg[low] = 3
        infos = [
            {"id": 1, "category_id": self.stuff_id, "isthing": False},
            {"id": 2, "category_id": self.thing_ids[0], "isthing": True, "score": 0.9},
            {"id": 3, "category_id": self.thing_ids[1], "isthing": True, "score": 0.2},
        ]
        sem = torch.zeros(self.num_classes, h, w)
        sem[self.stuff_id] = 1.0
        sem[self.thing_ids[0]][high] = 2.0
        sem[self.thing_ids[1]][low] = 2.0
        return {"instances": inst, "panoptic_seg": (seg, infos), "sem_seg": sem}


def _cfg(dataset: str = STUFF_FIRST):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.DATASETS.TEST = (dataset,)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _demo(dataset: str = STUFF_FIRST, **kwargs) -> predictor.VisualizationDemo:
    cfg = _cfg(dataset)
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
    """Capture the demo's log even when D2's setup_logger turned propagation off."""
    log = logging.getLogger("knet_d2.demo")
    log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="knet_d2.demo")
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


def _photo(h: int = 72, w: int = 96, which: str = "astronaut") -> np.ndarray:
    """A small real BGR photo from scikit-image's samples."""
    import skimage.data

    rgb = getattr(skimage.data, which)()
    return cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (w, h), interpolation=cv2.INTER_AREA)


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
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
    a = _write(tmp_path / "in" / "a.jpg", _photo())
    b = _write(tmp_path / "in" / "b.png", _photo(which="coffee"))
    out = tmp_path / "new" / "nested" / "vis"
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(a), str(b), "--output", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png"]
    for name in ("a.jpg", "b.png"):
        drawn = cv2.imread(str(out / name))
        assert drawn is not None and drawn.shape == (72, 96, 3)
    # something was drawn: the output is not the input
    assert np.abs(cv2.imread(str(out / "b.png")).astype(int) - _photo(which="coffee")).mean() > 1


def test_single_output_file_and_glob(cli, fake_model, cfg_file, tmp_path):
    _write(tmp_path / "in" / "a.jpg", _photo())
    out = tmp_path / "deep" / "result.png"
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(tmp_path / "in" / "*.jpg"),
                   "--output", str(out)])
    assert rc == 0 and out.is_file()


def test_corrupt_file_in_folder_is_reported_and_rest_written(
    cli, fake_model, cfg_file, tmp_path, demo_log, capsys
):
    folder = tmp_path / "imgs"
    _write(folder / "good1.jpg", _photo())
    _write(folder / "good2.png", _photo(which="coffee"))
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
    a = _write(tmp_path / "in" / "a.jpg", _photo())
    before = a.read_bytes()
    assert cli.main(["--config-file", str(cfg_file), "--input", str(a), "--output", str(a)]) == 2
    folder = a.parent
    rc = cli.main(["--config-file", str(cfg_file), "--input", str(folder), "--output", str(folder)])
    assert rc == 2
    assert a.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg"]
    with pytest.raises(ValueError, match="one of the inputs"):
        predictor.image_output_paths([a], a.parent)


def test_confidence_threshold_changes_cli_output(cli, fake_model, cfg_file, tmp_path):
    a = _write(tmp_path / "a.png", np.zeros((64, 64, 3), np.uint8))
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
    rc = cli.main(["--config-file", str(cfg_file), "--video-input", str(src), "--output", str(out),
                   "--parallel"])
    assert rc == 0
    assert len(_count_frames(out)) == 7


def test_no_output_without_display_is_a_clear_error(cli, fake_model, cfg_file, tmp_path,
                                                    monkeypatch):
    a = _write(tmp_path / "a.jpg", _photo())
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit, match="--output"):
        cli.main(["--config-file", str(cfg_file), "--input", str(a)])


def test_run_on_video_draws_every_frame_stuff_first():
    demo = _demo(STUFF_FIRST, confidence_threshold=0.1)
    frames = [_photo(48, 64) for _ in range(3)]
    out = list(demo.run_on_video(frames))
    assert len(out) == 3 and all(o.shape == (48, 64, 3) for o in out)
    inst_demo = _demo(STUFF_FIRST, task="instance", confidence_threshold=0.1)
    assert len(list(inst_demo.run_on_video(frames))) == 3


def test_codec_probe_skips_unknown_fourcc():
    cands = (("ZZZZ", ".mkv"), ("MJPG", ".avi"))
    assert predictor.probe_video_codec((64, 48), cands) == ("MJPG", ".avi")


def test_codec_probe_falls_back_when_writer_gives_empty_file(monkeypatch):
    assert predictor.probe_video_codec((32, 32), (("mp4v", ".mp4"),)) == ("mp4v", ".mp4")
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
    assert predictor.probe_video_codec((32, 32), cands) == ("MJPG", ".avi")
    with pytest.raises(RuntimeError, match="cannot write video"):
        predictor.probe_video_codec((32, 32), (("mp4v", ".mp4"), ("ZZZZ", ".mkv")))


def test_codec_probe_prefers_requested_container():
    cands = (("MJPG", ".avi"), ("mp4v", ".mp4"))
    assert predictor.probe_video_codec((32, 32), cands, prefer_suffix=".mp4") == ("mp4v", ".mp4")


# ------------------------------------------------------------------------------------ threshold
def test_filter_instances_by_score_and_boxes_from_masks():
    out = FakePredictor(_cfg(THINGS_FIRST))(np.zeros((40, 40, 3), np.uint8))
    kept = predictor.filter_instances(out["instances"], 0.5)
    assert len(kept) == 1 and kept.scores.tolist() == [pytest.approx(0.9)]
    assert kept.pred_classes.tolist() == [0]
    # zero boxes replaced by the mask's box: rows/cols 2..17 -> [2, 2, 18, 18]
    assert kept.pred_boxes.tensor.tolist() == [[2.0, 2.0, 18.0, 18.0]]
    assert len(out["instances"]) == 2  # the model output is untouched
    assert len(predictor.filter_instances(out["instances"], 0.0)) == 2
    assert len(predictor.filter_instances(out["instances"], 0.95)) == 0


def test_filter_panoptic_drops_low_things_to_void():
    out = FakePredictor(_cfg(THINGS_FIRST))(np.zeros((40, 40, 3), np.uint8))
    seg, infos = out["panoptic_seg"]
    new_seg, new_infos = predictor.filter_panoptic(seg, infos, 0.5)
    assert [s["id"] for s in new_infos] == [1, 2]
    assert not (new_seg == 3).any()
    void = new_seg[seg == 3].unique().tolist()
    assert len(void) == 1 and void[0] not in (1, 2)
    assert (seg == 3).any() and len(infos) == 3  # input untouched


@pytest.mark.parametrize("task", ["instance", "panoptic"])
def test_threshold_removes_low_score_from_drawing(task):
    black = np.zeros((128, 128, 3), np.uint8)
    low_region = (slice(74, 120), slice(74, 120))  # inside the score-0.2 "car" block
    high_region = (slice(8, 56), slice(8, 56))  # inside the score-0.9 "person" block

    def changed(img, region):  # share of pixels that are no longer black (labels are small)
        return float((img[region].max(axis=-1) > 8).mean())

    drawn = {}
    for thr in (0.1, 0.5):
        np.random.seed(0)  # D2 picks random instance colours; a near-black one would look "undrawn"
        _, vis = _demo(THINGS_FIRST, task=task, confidence_threshold=thr).run_on_image(black)
        drawn[thr] = vis.get_image()
    assert changed(drawn[0.1], low_region) > 0.6  # drawn when the threshold is below its score
    assert changed(drawn[0.5], low_region) < 0.2  # not drawn when above
    assert changed(drawn[0.5], high_region) > 0.6  # the confident one stays


def test_task_switch_and_missing_output():
    demo = _demo(THINGS_FIRST, task="semantic")
    preds, vis = demo.run_on_image(_photo(48, 64))
    assert vis.get_image().shape == (48, 64, 3)
    assert predictor.select_task(preds, "auto") == "panoptic_seg"
    assert predictor.select_task({"sem_seg": preds["sem_seg"]}, "auto") == "sem_seg"
    assert predictor.select_task({"sem_seg": 0, "instances": 0}, "auto") == "instances"
    with pytest.raises(ValueError, match="needs 'panoptic_seg'"):
        predictor.select_task({"instances": preds["instances"]}, "panoptic")
    with pytest.raises(ValueError, match="unknown task"):
        predictor.VisualizationDemo(_cfg(), predictor=lambda x: {}, task="boxes")


# ------------------------------------------------------------------------------------ thing ids
def test_non_contiguous_thing_ids_draw_without_index_error():
    meta = MetadataCatalog.get(STUFF_FIRST)
    out = FakePredictor(_cfg(STUFF_FIRST))(np.zeros((48, 64, 3), np.uint8))
    seg, infos = out["panoptic_seg"]
    # the defect being fixed: D2 indexes thing_classes with the contiguous id 3
    with pytest.raises(IndexError):
        Visualizer(np.zeros((48, 64, 3), np.uint8), meta).draw_panoptic_seg(seg, infos)
    view = predictor.drawing_metadata(meta)
    assert view.thing_classes[2] == "person" and view.thing_classes[3] == "car"
    assert view.thing_classes[0] == "sky" and len(view.thing_colors) == 4
    assert view.stuff_classes == meta.stuff_classes
    assert MetadataCatalog.get(STUFF_FIRST).thing_classes == ["person", "car"]  # not modified
    for task in ("panoptic", "instance", "semantic"):
        demo = _demo(STUFF_FIRST, task=task, confidence_threshold=0.0)
        _, vis = demo.run_on_image(_photo(48, 64))
        assert vis.get_image().shape == (48, 64, 3)
        assert len(list(demo.run_on_video([_photo(48, 64)] * 2))) == 2


def test_things_first_metadata_is_used_as_is():
    meta = MetadataCatalog.get(THINGS_FIRST)
    assert predictor.drawing_metadata(meta) is meta


# ------------------------------------------------------------------------------------ inputs
def test_expand_inputs_and_name_clashes(tmp_path):
    a = _write(tmp_path / "x" / "img.jpg", _photo(16, 16))
    b = _write(tmp_path / "y" / "img.jpg", _photo(16, 16))
    _write(tmp_path / "y" / "other.png", _photo(16, 16))
    files = predictor.expand_inputs([str(a), str(tmp_path / "y"), str(tmp_path / "*" / "*.jpg")])
    assert files == [a, b, tmp_path / "y" / "other.png"]
    outs = predictor.image_output_paths([a, b], tmp_path / "o")
    assert [p.name for p in outs] == ["img.jpg", "img_1.jpg"]
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        predictor.expand_inputs([str(tmp_path / "nothing_here*.jpg")])
    with pytest.raises(ValueError, match="is a file"):
        predictor.image_output_paths([a, b], a)
    # a dotted name ending with '/' is a directory; without it, a file OpenCV cannot write
    dotted = predictor.image_output_paths([a], f"{tmp_path / 'v1.d'}/")
    assert dotted == [tmp_path / "v1.d" / "img.jpg"]
    with pytest.raises(ValueError, match="end --output with '/'"):
        predictor.image_output_paths([a], tmp_path / "v2.d")


def test_render_predictions_for_quickstart(tmp_path):
    imgs = [_write(tmp_path / "in" / f"{n}.jpg", _photo(which=n)) for n in ("astronaut", "coffee")]
    cfg = _cfg(THINGS_FIRST)
    written = predictor.render_predictions(
        cfg, None, imgs, tmp_path / "qs" / "demo", predictor=FakePredictor(cfg)
    )
    assert written == [tmp_path / "qs" / "demo" / "astronaut.jpg",
                       tmp_path / "qs" / "demo" / "coffee.jpg"]
    assert all(cv2.imread(str(p)).shape == (72, 96, 3) for p in written)
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\x00" * 100)
    with pytest.raises(RuntimeError, match="bad.jpg"):
        predictor.render_predictions(
            cfg, None, [tmp_path / "in" / "bad.jpg"], tmp_path / "qs2", predictor=FakePredictor(cfg)
        )


# ------------------------------------------------------------------------------------ async
def test_async_predictor_cpu_worker_keeps_order_and_reports_errors():
    cfg = _cfg(THINGS_FIRST)
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


# ------------------------------------------------------------------------------------ real model
def test_real_tiny_knet_panoptic(tmp_path):
    """Demo pictures from a randomly initialised tiny K-Net (the quickstart path)."""
    configs = sorted((REPO_ROOT / "configs" / "synthetic" / "panoptic").glob("*.yaml"))
    if not configs:
        pytest.skip("no configs/synthetic/panoptic/*.yaml yet: nothing tiny to build")
    from conftest import load_config

    # random weights on purpose: MODEL.WEIGHTS_STRICT False lets inference run without a checkpoint
    cfg = load_config(
        configs[0], ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.WEIGHTS_STRICT", "False"]
    )
    torch.manual_seed(0)
    img = _write(tmp_path / "astronaut.jpg", _photo(96, 128))
    written = predictor.render_predictions(cfg, "", [img], tmp_path / "vis",
                                           confidence_threshold=0.0)
    assert written == [tmp_path / "vis" / "astronaut.jpg"]
    assert cv2.imread(str(written[0])).shape == (96, 128, 3)
    assert os.path.getsize(written[0]) > 0


# ------------------------------------------------------------------------------------ tools
# tools/visualize_data.py and tools/plot_metrics.py are written separately ("Demo" part 3). These
# tests assume D2-like command lines:
#   visualize_data.py --source annotation --config-file FILE --output-dir DIR
#   plot_metrics.py RUN_DIR_OR_METRICS_JSON --output-dir DIR
def _tool(name: str) -> Path:
    path = REPO_ROOT / "tools" / name
    if not path.is_file():
        pytest.skip(f"tools/{name} does not exist yet")
    return path


def test_visualize_data_on_hand_made_dataset(tmp_path, monkeypatch):
    import runpy

    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    tool = _tool("visualize_data.py")
    name = "knet_demo_test_handmade_instances"
    dicts = []
    for i, which in enumerate(("astronaut", "coffee")):
        img = _write(tmp_path / "imgs" / f"{which}.jpg", _photo(64, 64, which))
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
