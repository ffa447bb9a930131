"""Configuration mistakes fail at start-up (before the model / data loader), saying what to do."""
from __future__ import annotations

import logging
import re

import pytest
import torch
from detectron2.engine import default_argument_parser

from knet_d2 import get_knet_cfg
from knet_d2.config import ConfigError
from knet_d2.engine import check_model_weights, check_output_dir
from knet_d2.engine.startup_checks import (
    apply_determinism,
    check_knet_task_flags,
    check_num_classes,
    weights_hint,
)
from tests.helpers.paths import REPO_ROOT

SYNTH = REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml"
SYNTH_SEM = REPO_ROOT / "configs/synthetic/semantic/knet_fcn_tiny.yaml"


# ------------------------------------------------------------------------------- config keys
def _chain(tmp_path, child_body, base_body="MODEL:\n  KNET:\n    NUM_PROPOSALS: 10\n"):
    (tmp_path / "base.yaml").write_text(f"_BASE_: {SYNTH}\n{base_body}")
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: base.yaml\n{child_body}")
    return child


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    child = _chain(tmp_path, "MODEL:\n  KNET:\n    NUM_PROPOSAL: 5\n")
    with pytest.raises(ConfigError) as e:
        get_knet_cfg(str(child))
    msg = str(e.value)
    assert msg.startswith(str(child)) and "unknown config key MODEL.KNET.NUM_PROPOSAL." in msg
    assert "Did you mean MODEL.KNET.NUM_PROPOSALS" in msg


def test_unknown_key_in_a_base_file_names_that_file(tmp_path):
    child = _chain(tmp_path, "SOLVER:\n  MAX_ITER: 5\n", base_body="MODEL:\n  NUM_STAGES: 2\n")
    with pytest.raises(ConfigError) as e:
        get_knet_cfg(str(child))
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "base.yaml")) and "MODEL.NUM_STAGES" in msg
    assert "MODEL.KNET.NUM_STAGES" in msg and f"loading {child}" in msg


def test_wrong_value_type_in_file_names_file_and_key(tmp_path):
    child = _chain(tmp_path, "SOLVER:\n  MAX_ITER: many\n")
    with pytest.raises(ConfigError, match=re.escape(str(child)) + ".*SOLVER.MAX_ITER"):
        get_knet_cfg(str(child))


def test_missing_base_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_BASE_: nowhere/Base.yaml\n")
    with pytest.raises(ConfigError, match=r"base config .*nowhere/Base.yaml not found"):
        get_knet_cfg(str(bad))


def test_bad_command_line_options():
    with pytest.raises(ConfigError, match=r"option MODEL.KNET.NUM_PROPOSAL: unknown.*PROPOSALS"):
        get_knet_cfg(str(SYNTH), ["MODEL.KNET.NUM_PROPOSAL", "4"])
    with pytest.raises(ConfigError, match=r"option SOLVER.MAX_ITER ten: Type mismatch"):
        get_knet_cfg(str(SYNTH), ["SOLVER.MAX_ITER", "ten"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        get_knet_cfg(str(SYNTH), ["SOLVER.MAX_ITER"])


def test_train_net_setup_exits_with_the_message(tmp_path):
    import train_net

    child = _chain(tmp_path, "MODEL:\n  KNET:\n    NUM_PROPOSAL: 5\n")
    args = default_argument_parser().parse_args(["--config-file", str(child)])
    with pytest.raises(SystemExit, match="train_net.py: .*NUM_PROPOSAL"):
        train_net.setup(args)


# ------------------------------------------------------------------------------- OUTPUT_DIR
def _out_cfg(out, *opts):
    return get_knet_cfg(str(SYNTH), ["OUTPUT_DIR", str(out), *opts])


def test_new_run_into_checkpointed_output_dir_is_refused(tmp_path, caplog):
    (tmp_path / "log.txt").write_text("old log")
    (tmp_path / "metrics.json").write_text("{}")
    check_output_dir(_out_cfg(tmp_path), resume=False)  # logs only: nothing to lose
    (tmp_path / "model_0000999.pth").write_bytes(b"x")
    (tmp_path / "last_checkpoint").write_text("model_0000999.pth")
    with pytest.raises(ConfigError) as e:
        check_output_dir(_out_cfg(tmp_path), resume=False)
    msg = str(e.value)
    assert "last_checkpoint, model_0000999.pth" in msg
    assert "--resume" in msg and "OUTPUT_DIR" in msg and "OUTPUT_OVERWRITE True" in msg
    check_output_dir(_out_cfg(tmp_path), resume=True)
    check_output_dir(_out_cfg(tmp_path), resume=False, eval_only=True)
    (tmp_path / "last_checkpoint").unlink()  # --resume would start over at iteration 0
    with pytest.raises(ConfigError, match="--resume: .*no last_checkpoint.*model_0000999.pth"):
        check_output_dir(_out_cfg(tmp_path), resume=True)
    (tmp_path / "last_checkpoint").write_text("model_0000999.pth")
    caplog.set_level(logging.WARNING)
    check_output_dir(_out_cfg(tmp_path, "OUTPUT_OVERWRITE", "True"), resume=False)
    assert "model_0000999.pth" in caplog.text


def test_train_net_refuses_before_writing_anything(tmp_path):
    import train_net

    (tmp_path / "model_final.pth").write_bytes(b"precious")
    (tmp_path / "config.yaml").write_text("the old run's config")
    args = default_argument_parser().parse_args(
        ["--config-file", str(SYNTH), "OUTPUT_DIR", str(tmp_path)]
    )
    with pytest.raises(SystemExit, match="already holds checkpoints.*model_final.pth"):
        train_net.setup(args)
    assert (tmp_path / "config.yaml").read_text() == "the old run's config"
    assert (tmp_path / "model_final.pth").read_bytes() == b"precious"


# ------------------------------------------------------------------------------- MODEL.WEIGHTS
def test_missing_local_weights_name_the_file_and_how_to_get_them(tmp_path):
    cfg = _out_cfg(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "pretrained/resnet50_v1c_d2.pkl"))
    with pytest.raises(ConfigError) as e:
        check_model_weights(cfg, resume=False)
    msg = str(e.value)
    assert f"MODEL.WEIGHTS file not found: {tmp_path}/pretrained/resnet50_v1c_d2.pkl" in msg
    assert "resnet50_v1c-2cccc1ad.pth" in msg
    assert "tools/convert-mmcv-resnet-v1c-to-d2.py" in msg and 'MODEL.WEIGHTS ""' in msg


def test_weights_checks_respect_resume_scratch_and_eval_only(tmp_path, caplog):
    missing = _out_cfg(tmp_path, "MODEL.WEIGHTS", "nowhere.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    check_model_weights(missing, resume=True)  # resumes from OUTPUT_DIR: weights unused
    with pytest.raises(ConfigError, match="nowhere.pth"):
        check_model_weights(missing, resume=False)
    scratch = _out_cfg(tmp_path / "new", "MODEL.WEIGHTS", "")
    caplog.set_level(logging.INFO)
    check_model_weights(scratch, resume=False)
    assert "random initialisation" in caplog.text
    with pytest.raises(ConfigError, match="--eval-only needs trained weights"):
        check_model_weights(scratch, resume=False, eval_only=True)
    (tmp_path / "w.pth").write_bytes(b"x")
    check_model_weights(_out_cfg(tmp_path, "MODEL.WEIGHTS", str(tmp_path / "w.pth")),
                        resume=False, eval_only=True)


def test_unfetchable_url_weights_fail_with_a_hint(tmp_path, monkeypatch):
    from detectron2.utils.file_io import PathManager

    def offline(path, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(PathManager, "get_local_path", offline)
    url = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    with pytest.raises(ConfigError) as e:
        check_model_weights(_out_cfg(tmp_path, "MODEL.WEIGHTS", url), resume=False)
    msg = str(e.value)
    assert "could not be fetched (OSError: network unreachable)" in msg
    assert "dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/torchvision/R-50.pkl" in msg
    assert "tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth pretrained/R-50.pkl" in msg


def test_every_weight_file_named_in_configs_has_a_hint():
    names = set()
    for path in sorted((REPO_ROOT / "configs").rglob("*.yaml")):
        if path.name.startswith("Base"):
            continue
        names.add(get_knet_cfg(str(path), freeze=False).MODEL.WEIGHTS)
    names.discard("")
    assert names  # the COCO / ADE configs name ImageNet weights
    for w in names:
        assert weights_hint(w), w
    swin = weights_hint("swin_large_patch4_window7_224_22k.pkl")
    assert "v1.0.0/swin_large_patch4_window7_224_22k.pth" in swin
    assert "convert-pretrained-swin-model-to-d2.py" in swin


def test_train_net_checks_weights_before_building_model_or_loader(tmp_path, monkeypatch):
    import train_net

    def must_not_run(*a, **k):
        raise AssertionError("built before the start-up checks")

    monkeypatch.setattr(train_net.Trainer, "build_train_loader", classmethod(must_not_run))
    monkeypatch.setattr(train_net.Trainer, "build_model", classmethod(must_not_run))
    monkeypatch.setattr(train_net, "prepare_datasets", lambda cfg: None)
    args = default_argument_parser().parse_args(
        ["--config-file", str(SYNTH), "OUTPUT_DIR", str(tmp_path),
         "MODEL.WEIGHTS", "detectron2://nowhere/R-50.pkl?matching_heuristics=True",
         "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]
    )
    from detectron2.utils.file_io import PathManager

    monkeypatch.setattr(PathManager, "get_local_path", lambda p, **k: (_ for _ in ()).throw(
        OSError(f"cannot fetch {p}")))
    with pytest.raises(SystemExit, match="could not be fetched.*R-50.pkl"):
        train_net.main(args)


# ------------------------------------------------------------------------------- classes / flags
def test_class_count_mismatch_fails_before_training(tmp_path):
    cfg = _out_cfg(tmp_path, "MODEL.KNET.NUM_THING_CLASSES", "3")
    with pytest.raises(ConfigError, match="set MODEL.KNET.NUM_THING_CLASSES 4"):
        check_num_classes(cfg)
    check_num_classes(_out_cfg(tmp_path))
    sem = get_knet_cfg(str(SYNTH_SEM), ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"])
    with pytest.raises(ConfigError, match="set MODEL.SEM_SEG_HEAD.NUM_CLASSES 8"):
        check_num_classes(sem)
    check_num_classes(get_knet_cfg(str(SYNTH_SEM)))


def test_all_test_flags_off_fails_at_startup(tmp_path):
    off = [f"MODEL.KNET.TEST.{k}_ON" for k in ("SEMANTIC", "INSTANCE", "PANOPTIC")]
    cfg = _out_cfg(tmp_path, *[x for k in off for x in (k, "False")])
    with pytest.raises(ConfigError, match="SEMANTIC_ON / INSTANCE_ON / PANOPTIC_ON"):
        check_knet_task_flags(cfg)
    check_knet_task_flags(_out_cfg(tmp_path, off[0], "False"))


# ------------------------------------------------------------------------------- determinism
def test_deterministic_mode(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="CUDNN_BENCHMARK False"):
        apply_determinism(_out_cfg(tmp_path, "DETERMINISTIC", "True", "CUDNN_BENCHMARK", "True"))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        apply_determinism(_out_cfg(tmp_path, "DETERMINISTIC", "True"))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
