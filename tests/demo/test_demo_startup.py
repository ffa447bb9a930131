"""demo/demo.py refuses misleading runs at start-up and explains an empty drawing."""
from __future__ import annotations

import importlib.util
import logging

import cv2
import numpy as np
import predictor  # demo/predictor.py (demo/ is on pytest's pythonpath)
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from tests.helpers.paths import REPO_ROOT

DEMO_DIR = REPO_ROOT / "demo"

NAMED = "knet_demo_startup_named"
MetadataCatalog.get(NAMED).set(
    thing_classes=["cat", "dog"],
    stuff_classes=["cat", "dog"],
    thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
    stuff_dataset_id_to_contiguous_id={1: 0, 2: 1},
)


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("knet_demo_startup_cli", DEMO_DIR / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LowScorePredictor:
    """Two instances scoring 0.21 and 0.05 (below the demo's default threshold 0.5)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def __call__(self, image: np.ndarray) -> dict:
        h, w = image.shape[:2]
        inst = Instances((h, w))
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, : h // 2, : w // 2] = True
        masks[1, h // 2 :, w // 2 :] = True
        inst.pred_masks = masks
        inst.scores = torch.tensor([0.2137, 0.05])
        inst.pred_classes = torch.tensor([0, 1])
        inst.pred_boxes = Boxes(torch.zeros(2, 4))
        return {"instances": inst}


def _config(tmp_path, weights: str, test: str = NAMED):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        f'MODEL:\n  META_ARCHITECTURE: "KNet"\n  DEVICE: "cpu"\n  WEIGHTS: "{weights}"\n'
        f'DATASETS:\n  TEST: ("{test}",)\n'
    )
    return str(path)


def _image(tmp_path):
    path = tmp_path / "in.jpg"
    cv2.imwrite(str(path), np.full((48, 64, 3), 120, np.uint8))
    return str(path)


def _run(cli, capsys, *argv):
    rc = cli.main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def test_unknown_dataset_name_is_one_line_error(cli, capsys, tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    rc, err = _run(cli, capsys, "--config-file", _config(tmp_path, weights, "my_typo_val"),
                   "--input", _image(tmp_path), "--output", str(tmp_path / "o"))
    assert rc == 2 and len(err.splitlines()) == 1
    assert "dataset 'my_typo_val' of DATASETS.TEST is not registered" in err
    assert "--dataset NAME=KIND" in err
    assert not (tmp_path / "o").exists()


def test_empty_weights_need_the_explicit_flag(cli, capsys, tmp_path, monkeypatch):
    cfg = _config(tmp_path, "")
    rc, err = _run(cli, capsys, "--config-file", cfg, "--input", _image(tmp_path),
                   "--output", str(tmp_path / "o"))
    assert rc == 2 and len(err.splitlines()) == 1
    assert "MODEL.WEIGHTS is empty" in err and "--allow-random-weights" in err
    monkeypatch.setattr(predictor, "Predictor", LowScorePredictor)
    rc, _ = _run(cli, capsys, "--config-file", cfg, "--input", _image(tmp_path),
                 "--output", str(tmp_path / "o.jpg"), "--allow-random-weights")
    assert rc == 0 and (tmp_path / "o.jpg").is_file()


def test_missing_weights_file_is_one_line_error(cli, capsys, tmp_path):
    missing = tmp_path / "nope" / "model_final.pth"
    rc, err = _run(cli, capsys, "--config-file", _config(tmp_path, str(missing)),
                   "--input", _image(tmp_path), "--output", str(tmp_path / "o.jpg"))
    assert rc == 2 and err == f"demo/demo.py: MODEL.WEIGHTS file not found: {missing} " \
        f"(looked in {missing})"
    assert "Traceback" not in err


def test_nothing_drawn_reports_best_score_and_threshold(cli, capsys, tmp_path, monkeypatch,
                                                       caplog):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    monkeypatch.setattr(predictor, "Predictor", LowScorePredictor)
    caplog.set_level(logging.WARNING)
    log = logging.getLogger("knet_d2")  # the demo's and the renderer's loggers are below it
    log.addHandler(caplog.handler)
    try:
        rc, _ = _run(cli, capsys, "--config-file", _config(tmp_path, weights),
                     "--input", _image(tmp_path), "--output", str(tmp_path / "o.jpg"))
    finally:
        log.removeHandler(caplog.handler)
    assert rc == 0
    text = caplog.text
    assert "nothing drawn: best score 0.214 is below --confidence-threshold 0.5" in text
    assert "try --confidence-threshold 0.21" in text


def test_hint_is_silent_when_something_is_drawn():
    cfg = get_cfg()
    cfg.DATASETS.TEST = (NAMED,)
    demo = predictor.VisualizationDemo(cfg, predictor=LowScorePredictor(cfg),
                                       confidence_threshold=0.2)
    out = demo.predictor(np.zeros((8, 8, 3), np.uint8))
    key, payload = demo.prepare(out)
    assert len(payload) == 1 and demo.nothing_drawn_hint(out, key, payload) is None
