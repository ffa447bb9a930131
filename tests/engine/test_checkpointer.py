"""KNetCheckpointer: atomic saves, interrupted saves never picked up, code-free loading.

The SIGKILL-based end-to-end checks are in test_resume.py; here each failure is simulated
in-process (a failing write, a failing rename, leftover temporary files, torn files).
"""
from __future__ import annotations

import logging
import os
import pickle
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from knet_d2.engine import KNetCheckpointer


@pytest.fixture
def caplog_all(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _temps(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_save_writes_complete_checkpoint_then_tag(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.99))
    model(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    ck = KNetCheckpointer(model, str(tmp_path), optimizer=opt)
    ck.save("model_0000001", iteration=1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert _temps(tmp_path) == []
    data = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert data["iteration"] == 1 and data["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(data["model"]["0.weight"], model[0].weight)


def test_failed_rename_keeps_previous_checkpoint_and_tag(tmp_path, monkeypatch):
    model = _model()
    ck = KNetCheckpointer(model, str(tmp_path))
    ck.save("model_0000001")
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "model_0000002.pth":
            raise OSError("simulated crash before the rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    saved = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(OSError, match="simulated"):
        ck.save("model_0000002")
    assert not (tmp_path / "model_0000002.pth").exists() and _temps(tmp_path) == []
    assert ck.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    fresh = _model(seed=1)
    KNetCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.equal(fresh[0].weight, saved)


def test_non_saving_rank_writes_nothing(tmp_path):
    ck = KNetCheckpointer.from_checkpointer(
        KNetCheckpointer(_model(), str(tmp_path), save_to_disk=False, extra=nn.Linear(1, 1))
    )
    assert not ck.save_to_disk and list(ck.checkpointables) == ["extra"]
    ck.save("model_0000001")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- resuming
def test_resume_ignores_and_removes_temporaries_of_interrupted_saves(tmp_path, caplog_all):
    model = _model()
    ck = KNetCheckpointer(model, str(tmp_path))
    ck.save("model_0000004")
    torn = tmp_path / ".model_0000009.pth.1a2b3c4d.tmp"
    torn.write_bytes(b"torn half of a checkpoint")
    users = tmp_path / ".notes.tmp"  # not ours: never touched
    users.write_text("keep")
    assert ck.get_all_checkpoint_files() == [str(tmp_path / "model_0000004.pth")]
    fresh = _model(seed=3)
    ck2 = KNetCheckpointer(fresh, str(tmp_path))
    assert ck2.stale_temporary_files() == [str(torn)]
    ck2.resume_or_load("", resume=True)  # loads the tagged file; leaves the temp alone
    assert torch.equal(fresh[0].weight, model[0].weight) and torn.exists()
    non_saving = KNetCheckpointer(fresh, str(tmp_path), save_to_disk=False)
    assert non_saving.remove_stale_temporary_files() == [] and torn.exists()
    assert ck2.remove_stale_temporary_files() == [str(torn)]
    assert not torn.exists() and users.read_text() == "keep"
    assert any(torn.name in r.getMessage() and "interrupted" in r.getMessage()
               for r in caplog_all.records)


def test_tag_naming_a_missing_file_is_a_clear_error(tmp_path):
    ck = KNetCheckpointer(_model(), str(tmp_path))
    ck.save("model_0000001")
    (tmp_path / "last_checkpoint").write_text("model_0000007.pth")
    with pytest.raises(FileNotFoundError, match="model_0000007.pth.*model_0000001.pth"):
        ck.resume_or_load("", resume=True)


def test_truncated_checkpoint_is_reported_as_corrupt(tmp_path):
    ck = KNetCheckpointer(_model(), str(tmp_path))
    ck.save("model_0000001")
    path = tmp_path / "model_0000001.pth"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="model_0000001.pth.*incomplete or corrupt"):
        KNetCheckpointer(_model(), str(tmp_path)).resume_or_load("", resume=True)


# ------------------------------------------------------------------------------- safe loading
def _code_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "execute arbitrary code" in r.getMessage()]


def test_own_checkpoints_load_without_code_execution_warning(tmp_path, caplog_all):
    src = _model()
    KNetCheckpointer(src, str(tmp_path)).save("model_final")
    dst = _model(seed=5)
    KNetCheckpointer(dst).load(str(tmp_path / "model_final.pth"))
    assert torch.equal(dst[0].weight, src[0].weight)
    assert _code_warnings(caplog_all) == []


def test_pth_needing_full_unpickling_loads_with_a_warning(tmp_path, caplog_all):
    src = _model()
    path = tmp_path / "foreign.pth"
    torch.save({"model": src.state_dict(), "note": Fraction(1, 3)}, path)
    dst = _model(seed=5)
    extra = KNetCheckpointer(dst).load(str(path))
    assert extra["note"] == Fraction(1, 3) and torch.equal(dst[0].weight, src[0].weight)
    (msg,) = _code_warnings(caplog_all)
    assert "foreign.pth" in msg and "Fraction" in msg


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_model_zoo_pkl_loads_without_unpickling_code(tmp_path, caplog_all, protocol):
    src = _model()
    weights = {k: v.numpy().copy() for k, v in src.state_dict().items()}
    path = tmp_path / "R-tiny.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test", "matching_heuristics": True}, f,
                    protocol=protocol)
    dst = _model(seed=5)
    KNetCheckpointer(dst).load(str(path))
    assert torch.equal(dst[0].weight, src[0].weight)
    assert _code_warnings(caplog_all) == []


def test_caffe2_style_pkl_drops_momentum_and_uses_heuristics(tmp_path):
    path = tmp_path / "c2.pkl"
    blobs = {"conv1_w": np.ones((2, 2), np.float32), "conv1_w_momentum": np.zeros(1)}
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    data = KNetCheckpointer(_model())._load_file(str(path))
    assert list(data["model"]) == ["conv1_w"] and data["matching_heuristics"]
    assert data["__author__"] == "Caffe2"


def test_pkl_with_other_objects_loads_with_a_warning(tmp_path, caplog_all):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "__author__": "x", "note": Fraction(2, 3)}, f)
    data = KNetCheckpointer(_model())._load_file(str(path))
    assert data["note"] == Fraction(2, 3)
    (msg,) = _code_warnings(caplog_all)
    assert "odd.pkl" in msg and "fractions.Fraction" in msg


# ------------------------------------------------------------------------------- train_net
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets
    from tests.helpers.tiny_training import register_tiny

    root = tmp_path_factory.mktemp("ckpt_data")
    ensure_synthetic_for_datasets([register_tiny(root)])
    return root


def test_trainer_saves_through_knet_checkpointer(tiny_data, tmp_path):
    from detectron2.engine.hooks import PeriodicCheckpointer

    import train_net
    from tests.helpers.paths import load_config
    from tests.helpers.tiny_training import CONFIG, tiny_train_opts

    cfg = load_config(CONFIG, tiny_train_opts(tmp_path, max_iter=3, period=1, workers=0))
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    assert type(trainer.checkpointer) is KNetCheckpointer
    (periodic,) = [h for h in trainer._hooks if isinstance(h, PeriodicCheckpointer)]
    assert periodic.checkpointer is trainer.checkpointer
    assert sorted(trainer.checkpointer.checkpointables) == ["data_sampler", "trainer"]
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    data = torch.load(tmp_path / "model_0000000.pth", weights_only=True)
    assert data["iteration"] == 0 and "optimizer" in data["trainer"]["_trainer"]


def test_eval_only_loads_through_knet_checkpointer(tiny_data, tmp_path, monkeypatch):
    from detectron2.engine import default_argument_parser
    from detectron2.modeling import build_model

    import train_net
    from tests.helpers.paths import load_config
    from tests.helpers.tiny_training import CONFIG, tiny_train_opts

    weights = tmp_path / "trained.pth"  # complete weights: --eval-only refuses partial ones
    model = build_model(load_config(CONFIG, tiny_train_opts(tmp_path / "out")))
    torch.save({"model": model.state_dict()}, weights)
    seen = []
    real = KNetCheckpointer.resume_or_load

    def spy(self, path, *, resume=True):
        seen.append((type(self), path, resume))
        return real(self, path, resume=resume)

    monkeypatch.setattr(KNetCheckpointer, "resume_or_load", spy)
    monkeypatch.setattr(train_net.Trainer, "test", classmethod(lambda cls, cfg, model: {}))
    args = default_argument_parser().parse_args(
        ["--config-file", str(CONFIG), "--eval-only", *tiny_train_opts(tmp_path / "out"),
         "MODEL.WEIGHTS", str(weights)]
    )
    train_net.main(args)
    assert seen == [(KNetCheckpointer, str(weights), False)]
