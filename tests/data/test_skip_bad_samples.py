"""knet_d2.data.skip_bad_samples: the training loader skips unreadable samples, counts them and
gives up with a clear error when too many fail in a row."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from detectron2.data import build_detection_train_loader
from detectron2.utils.events import EventStorage
from PIL import Image

from knet_d2.data.skip_bad_samples import (
    ReportedOnce,
    SkipBadSamples,
    TooManyBadSamplesError,
    remove_stale_marker_directories,
)
from tests.helpers.image_files import rgb
from tests.helpers.mapper_samples import CONFIGS, identity_instance_mapper
from tests.helpers.paths import REPO_ROOT, load_config


def _mixed_dataset(tmp_path: Path, n_good: int, n_bad: int):
    dicts = []
    for i in range(n_good):
        p = tmp_path / f"good{i}.png"
        Image.fromarray(rgb(20, 30, seed=i)).save(p)
        dicts.append({"file_name": str(p), "height": 20, "width": 30, "annotations": []})
    for i in range(n_bad):
        p = tmp_path / f"bad{i}.jpg"
        p.write_bytes(b"broken" * 20)
        dicts.append({"file_name": str(p), "height": 20, "width": 30, "annotations": []})
    return dicts


def test_training_loader_skips_and_counts_bad_samples(tmp_path, caplog):
    dicts = _mixed_dataset(tmp_path, n_good=3, n_bad=2)
    mapper = SkipBadSamples(identity_instance_mapper())
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=2, num_workers=0, aspect_ratio_grouping=False
    )
    with caplog.at_level(logging.WARNING), EventStorage(0) as storage:
        it = iter(loader)
        batches = [next(it) for _ in range(6)]
    assert all(len(b) == 2 for b in batches)
    assert all(Path(x["file_name"]).name.startswith("good") for b in batches for x in b)
    assert mapper.num_skipped >= 2  # both bad files were drawn at least once in 12 samples
    logged = [r.getMessage() for r in caplog.records if "Skipping bad training sample" in
              r.getMessage()]
    assert len(logged) == 2  # once per file
    assert all("ImageReadError: cannot read image file" in s and "bad" in s for s in logged)
    assert storage.latest()["data/num_skipped_samples"][0] == mapper.num_skipped


def test_all_bad_samples_give_up_with_a_clear_error(tmp_path):
    dicts = _mixed_dataset(tmp_path, n_good=0, n_bad=3)
    mapper = SkipBadSamples(identity_instance_mapper(), dataset_size=len(dicts))
    loader = build_detection_train_loader(
        dicts, mapper=mapper, total_batch_size=1, num_workers=0, aspect_ratio_grouping=False
    )
    with pytest.raises(TooManyBadSamplesError, match=r"3 training samples in a row could not "
                                                     r"be loaded(.|\n)*bad\d\.jpg: ImageReadError"):
        next(iter(loader))
    # without the dataset size the limit is max_consecutive_failures
    m = SkipBadSamples(identity_instance_mapper(), max_consecutive_failures=4)
    for _ in range(3):
        assert m(dicts[0]) is None
    (tmp_path / "g").mkdir()
    good = _mixed_dataset(tmp_path / "g", n_good=1, n_bad=0)
    assert m(good[0]) is not None and m.num_consecutive == 0  # a success resets the streak
    for _ in range(3):
        assert m(dicts[1]) is None
    with pytest.raises(TooManyBadSamplesError):
        m(dicts[2])
    assert m.num_skipped == 7


def test_skip_does_not_hide_programming_errors(tmp_path):
    def buggy(d):
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError):
        SkipBadSamples(buggy)({"file_name": "x.jpg"})


def test_skip_bad_samples_is_on_by_default():
    cfg = load_config(REPO_ROOT / CONFIGS["panoptic"])
    assert cfg.DATALOADER.SKIP_BAD_SAMPLES is True


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_marker_directories_of_gone_processes_are_removed(tmp_path):
    dead = tmp_path / f"knet_skipped_{_dead_pid()}_abc"
    dead.mkdir()
    (dead / "0123").touch()
    alive = tmp_path / f"knet_skipped_{os.getpid()}_def"
    alive.mkdir()
    kept = [alive, tmp_path / "knet_skipped_old1x2", tmp_path / "other_dir"]
    for d in kept[1:]:
        d.mkdir()
    not_a_dir = tmp_path / f"knet_skipped_{_dead_pid()}_file"
    not_a_dir.touch()
    assert remove_stale_marker_directories(str(tmp_path)) == 1
    assert not dead.exists()
    assert all(d.is_dir() for d in kept) and not_a_dir.is_file()
    assert remove_stale_marker_directories(str(tmp_path / "missing")) == 0


def test_marker_directory_of_a_killed_process_is_removed_by_the_next_one(tmp_path, monkeypatch):
    code = (
        "import os, signal, sys\n"
        "from knet_d2.data.skip_bad_samples import ReportedOnce\n"
        "r = ReportedOnce()\n"
        "assert r.first('x')\n"
        "print(r.directory, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=REPO_ROOT)
    assert run.returncode == -signal.SIGKILL, run.stderr
    left = Path(run.stdout.strip())
    assert left.parent == tmp_path and left.name.startswith("knet_skipped_") and left.is_dir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    reported = ReportedOnce()
    assert not left.exists()
    assert Path(reported.directory).parent == tmp_path and Path(reported.directory).is_dir()
