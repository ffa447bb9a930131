"""Quiet, truthful output: warning filters, plain log files, silent codec probing, one skip
warning per file, one-line evaluation data errors."""
from __future__ import annotations

import copy
import io
import json
import logging
import multiprocessing as mp
import shutil
import subprocess
import sys
import warnings

import pytest

from knet_d2.data.skip_bad_samples import ReportedOnce, SkipBadSamples
from knet_d2.engine.plain_logs import PlainTextFormatter, strip_ansi_in_log_files
from knet_d2.quiet_warnings import filter_third_party_warnings
from tests.helpers.paths import REPO_ROOT

SYNTH_INSTANCE = REPO_ROOT / "configs/synthetic/instance/knet_R18_tiny.yaml"


def _stderr_of(*argv: str) -> str:
    res = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    return res.stderr


def test_named_third_party_future_warnings_are_filtered():
    # fvcore.nn.focal_loss (imported by detectron2.layers) calls torch.jit.script at import
    assert "FutureWarning" not in _stderr_of("train_net.py", "--help")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # what a plain interpreter does
        filter_third_party_warnings()
        warnings.warn("`torch.jit.script` is deprecated. Please switch to ...", FutureWarning,
                      stacklevel=1)
        warnings.warn("mine", FutureWarning, stacklevel=1)  # any other FutureWarning still shows
    assert [str(w.message) for w in seen] == ["mine"]


def test_log_file_has_no_colour_codes(tmp_path):
    import train_net

    args = train_net.argument_parser().parse_args(
        ["--config-file", str(SYNTH_INSTANCE), "OUTPUT_DIR", str(tmp_path / "run")]
    )
    train_net.setup(args)
    logging.getLogger("detectron2.test").info("\x1b[36mcoloured\x1b[0m table")
    for handler in logging.getLogger("detectron2").handlers:
        handler.flush()
    text = (tmp_path / "run" / "log.txt").read_text()
    assert "Running with full config" in text and "coloured table" in text
    assert "\x1b" not in text


def test_plain_text_formatter_wraps_only_non_terminal_handlers():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    log = logging.getLogger("knet_d2.test_plain_logs")
    file_like, tty = io.StringIO(), Tty()
    handlers = [logging.StreamHandler(file_like), logging.StreamHandler(tty)]
    for h in handlers:
        log.addHandler(h)
    try:
        assert strip_ansi_in_log_files() >= 1
        assert strip_ansi_in_log_files() == 0  # idempotent
        log.warning("\x1b[38;5;204mMODEL\x1b[39m: \x1b[1;31mred\x1b[0m")
    finally:
        for h in handlers:
            log.removeHandler(h)
    assert file_like.getvalue() == "MODEL: red\n"
    assert "\x1b[1;31m" in tty.getvalue()
    assert isinstance(handlers[0].formatter, PlainTextFormatter)


def test_codec_probe_is_silent_unless_every_codec_fails(capfd, caplog):
    import video_io  # demo/video_io.py (demo/ is on pytest's pythonpath)

    capfd.readouterr()
    assert video_io.probe_video_codec(candidates=[("ZZZZ", ".mkv"), ("MJPG", ".avi")]) == (
        "MJPG", ".avi")
    out = capfd.readouterr()
    assert "ERROR" not in out.err and "WARN" not in out.err
    with pytest.raises(RuntimeError, match="cannot write video with any of ZZZZ"):
        video_io.probe_video_codec(candidates=[("ZZZZ", ".mkv")])
    out = capfd.readouterr()
    assert "ZZZZ" in out.err or "No video codec works" in caplog.text  # the reasons are shown


def _fail(_d):
    raise FileNotFoundError("image file not found: /data/x.jpg")


def _child_first(reported: ReportedOnce, key: str, queue) -> None:
    queue.put(reported.first(key))


def test_skip_warning_once_per_file_across_worker_copies(caplog):
    wrapper = SkipBadSamples(_fail)
    worker_a, worker_b = copy.deepcopy(wrapper), copy.deepcopy(wrapper)  # as forked workers
    caplog.set_level(logging.DEBUG, logger="knet_d2.data.skip_bad_samples")
    for w in (worker_a, worker_b, worker_a, copy.deepcopy(wrapper)):  # last: a new "epoch"
        assert w({"file_name": "/data/x.jpg"}) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "/data/x.jpg" in warnings[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 3

    reported = ReportedOnce()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child_first, args=(reported, "k", queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results == [False, True] and reported.first("k") is False


@pytest.mark.parametrize("workers", [0, 1])
def test_missing_evaluation_image_is_one_line(shared_data, tmp_path, workers):
    from knet_d2 import get_knet_cfg
    from knet_d2.engine.trainer import EvaluationDataError, Trainer

    src = shared_data / "coco_tiny"
    data = json.loads((src / "annotations" / "instances_val2017.json").read_text())
    keep = data["images"][:2]
    data["images"] = keep
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in
                           {i["id"] for i in keep}]
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(src / "val2017" / keep[1]["file_name"], images / keep[1]["file_name"])
    (tmp_path / "val.json").write_text(json.dumps(data))
    name = f"own_eval_missing_{workers}"
    cfg = get_knet_cfg(
        str(SYNTH_INSTANCE),
        ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
         "MODEL.KNET.NUM_THING_CLASSES", "80",
         "DATALOADER.NUM_WORKERS", str(workers), "OUTPUT_DIR", str(tmp_path / "out")],
        datasets=[f"{name}=coco_instance:{tmp_path / 'val.json'}:{images}"],
    )
    model = Trainer.build_model(cfg)
    with pytest.raises(EvaluationDataError) as e:
        Trainer.test(cfg, model)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert f"image file not found: {images / keep[0]['file_name']}" in msg
