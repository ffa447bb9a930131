"""knet_d2.data.skip_bad_samples: the training loader skips unreadable samples, counts them and
gives up with a clear error when too many fail in a row."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from detectron2.data import build_detection_train_loader
from detectron2.utils.events import EventStorage
from PIL import Image

from knet_d2.data.skip_bad_samples import SkipBadSamples, TooManyBadSamplesError
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
