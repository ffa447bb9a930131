"""Official K-Net checkpoints load as released (converted on load, issue item 1) and a
checkpoint that does not fit the model is refused for inference, by name (item 2).

The official-layout files are made from small knet_d2 models with the inverse mapping of
tests/helpers/official_layouts.py (independent of the converter's rules).
"""
from __future__ import annotations

import logging

import pytest
import torch
from detectron2.modeling import build_model

from knet_d2.checkpoint import OfficialCheckpointError
from knet_d2.engine import (
    IncompatibleWeightsError,
    KNetCheckpointer,
    check_inference_weights,
)
from tests.helpers.official_layouts import (
    COCO,
    R18,
    SMALL_DET,
    SMALL_SEM,
    build,
    mmdet_layout,
    mmseg_layout,
    save_mmcv,
)
from tests.helpers.paths import REPO_ROOT, load_config

PANOPTIC = COCO / "panoptic-segmentation/knet_R50_1x.yaml"
INSTANCE = COCO / "instance-segmentation/knet_R50_1x.yaml"
SEMANTIC = REPO_ROOT / "configs/ade20k/semantic-segmentation/knet_fcn_R50_512x512_80k.yaml"
SMALL_R18 = SMALL_DET + R18


@pytest.fixture
def info_log(caplog):
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture(scope="module")
def panoptic_source():
    return build(PANOPTIC, SMALL_R18, seed=0)


@pytest.fixture(scope="module")
def official_panoptic(panoptic_source, tmp_path_factory):
    """A small panoptic K-Net saved as ZwwWayne/K-Net saves it (mmcv meta + state_dict)."""
    path = tmp_path_factory.mktemp("official") / "knet_s3_r18_fpn_1x_coco-panoptic.pth"
    save_mmcv(path, mmdet_layout(panoptic_source))
    return path


@pytest.fixture(scope="module")
def official_instance(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "knet_s3_r18_fpn_1x_coco.pth"
    save_mmcv(path, mmdet_layout(build(INSTANCE, SMALL_R18, seed=2)))
    return path


def _load(config, opts, weights, seed=99):
    """A fresh model (other weights until loaded) and its checkpointer after loading."""
    model = build(config, opts, seed=seed)
    checkpointer = KNetCheckpointer(model)
    checkpointer.load(str(weights))
    return model, checkpointer


def _assert_same_state(a, b):
    sa = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sa[k]), k


# ------------------------------------------------------------------ item 1: convert on load
def test_mmdet_release_converts_on_load_with_one_log_line(
    official_panoptic, panoptic_source, info_log
):
    model, checkpointer = _load(PANOPTIC, SMALL_R18, official_panoptic)
    _assert_same_state(panoptic_source, model)
    report = checkpointer.last_load_report
    assert report.complete and report.matched == report.total > 100
    assert report.source == "mmdet K-Net panoptic, ResNet-18"
    lines = [r.getMessage() for r in info_log.records if "official K-Net" in r.getMessage()]
    assert len(lines) == 1
    line = lines[0]
    assert str(official_panoptic) in line and "mmdet layout" in line
    assert "task panoptic" in line and "133 rows" in line and "backbone ResNet-18" in line
    assert "converted" in line and "num_batches_tracked" not in line  # counted, not listed
    check_inference_weights(report)  # complete: no error


def test_release_in_a_stride_4_neck_loads_with_a_warning(
    official_panoptic, panoptic_source, caplog
):
    """The releases were trained with the stride-8 neck; a MODEL.KNET.NECK.OUT_STRIDE 4 model
    takes every tensor, and says that its outputs will differ."""
    caplog.set_level(logging.WARNING)
    model, checkpointer = _load(PANOPTIC, SMALL_R18 + ["MODEL.KNET.NECK.OUT_STRIDE", "4"],
                                official_panoptic)
    _assert_same_state(panoptic_source, model)
    assert checkpointer.last_load_report.complete
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(official_panoptic) in w and "trained with the stride-8 neck" in w
               and "fuses at stride 4" in w for w in warnings), warnings
    caplog.clear()
    _load(PANOPTIC, SMALL_R18, official_panoptic)  # the official layout: no warning
    assert not [r for r in caplog.records if "stride-8 neck" in r.getMessage()]


def test_release_loads_from_a_file_url(official_panoptic, panoptic_source):
    model, checkpointer = _load(PANOPTIC, SMALL_R18, official_panoptic.as_uri())
    _assert_same_state(panoptic_source, model)
    assert checkpointer.last_load_report.filename == official_panoptic.as_uri()


def test_release_loads_from_its_https_url_via_the_pathmanager_cache(
    official_panoptic, panoptic_source, tmp_path, monkeypatch, info_log
):
    """An https:// URL is fetched by D2's PathManager into $FVCORE_CACHE/<url path>; offline,
    the file is put there first (what a previous download leaves)."""
    url = ("https://download.openmmlab.com/mim-example/knet/det/knet/knet_s3_r50_fpn_1x_coco-"
           "panoptic/knet_s3_r50_fpn_1x_coco-panoptic_20211017_151750-395fbcba.pth")
    cached = tmp_path / "cache" / url.split("://", 1)[1].split("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(official_panoptic.read_bytes())
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    model, checkpointer = _load(PANOPTIC, SMALL_R18, url)
    _assert_same_state(panoptic_source, model)
    assert checkpointer.last_load_report.filename == url
    assert f"{url} is an official K-Net checkpoint" in info_log.text


def test_mmseg_release_converts_on_load(tmp_path, info_log):
    source = build(SEMANTIC, SMALL_SEM, seed=3)
    path = tmp_path / "knet_s3_fcn_r50-d8_ade20k.pth"
    save_mmcv(path, mmseg_layout(source))
    model, checkpointer = _load(SEMANTIC, SMALL_SEM, path)
    _assert_same_state(source, model)
    assert checkpointer.last_load_report.complete
    text = info_log.text
    assert "mmseg layout" in text and "task semantic" in text and "ResNetV1c-50" in text


def test_knet_d2_checkpoints_load_as_before(panoptic_source, tmp_path, info_log):
    KNetCheckpointer(panoptic_source, save_dir=str(tmp_path)).save("model_final")
    model, checkpointer = _load(PANOPTIC, SMALL_R18, tmp_path / "model_final.pth")
    _assert_same_state(panoptic_source, model)
    assert checkpointer.last_load_report.complete
    assert checkpointer.last_load_report.source == ""
    assert "official K-Net" not in info_log.text


def test_other_mmdet_model_is_refused_naming_file_and_keys(tmp_path):
    sd = {"rpn_head.rpn_conv.weight": torch.zeros(4, 4, 3, 3),
          "roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 16)}
    path = tmp_path / "mask_rcnn_r50.pth"
    save_mmcv(path, sd)
    with pytest.raises(OfficialCheckpointError) as e:
        _load(PANOPTIC, SMALL_R18, path)
    msg = str(e.value)
    assert str(path) in msg and "mmdet layout" in msg and "2 of its 2 keys" in msg
    assert "roi_head.bbox_head.fc_cls.weight" in msg and "not a K-Net release" in msg


# ------------------------------------------------------------------ item 2: refused by name
def _refusal(config, opts, weights):
    _, checkpointer = _load(config, opts, weights)
    with pytest.raises(IncompatibleWeightsError) as e:
        check_inference_weights(checkpointer.last_load_report, strict=True)
    return checkpointer.last_load_report, str(e.value)


def test_instance_release_in_panoptic_config_is_refused(official_instance):
    report, msg = _refusal(PANOPTIC, SMALL_R18, official_instance)
    assert str(official_instance) in msg
    assert f"{report.matched} of {report.total} model tensors matched" in msg
    assert f"{len(report.mismatched)} with another shape" in msg and report.mismatched
    assert "another task or class count" in msg
    assert "fc_cls.weight (checkpoint [80, 32], model [133, 32])" in msg
    assert "MODEL.WEIGHTS_STRICT False" in msg
    listed = msg.split("Parameters not filled: ")[1].split(". Likely cause")[0]
    assert len(listed.split("), ")) <= 10  # at most 10 names


def test_imagenet_only_file_is_refused(panoptic_source, tmp_path):
    backbone = {k: v for k, v in panoptic_source.state_dict().items()
                if k.startswith("backbone.bottom_up.")}
    path = tmp_path / "R-18-imagenet.pth"
    torch.save({"model": backbone}, path)
    report, msg = _refusal(PANOPTIC, SMALL_R18, path)
    assert "ImageNet-only" in msg and str(path) in msg
    assert f"{len(report.missing)} missing" in msg and report.missing
    assert "(missing)" in msg


def test_other_backbone_is_refused(official_panoptic):
    narrow_r50 = SMALL_DET + ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
                              "MODEL.RESNETS.RES2_OUT_CHANNELS", "32"]
    _, msg = _refusal(PANOPTIC, narrow_r50, official_panoptic)
    assert "another backbone" in msg and "backbone.bottom_up.res" in msg


def test_unknown_layout_is_refused(tmp_path):
    path = tmp_path / "something_else.pth"
    torch.save({"encoder.conv.weight": torch.zeros(3, 3), "decoder.fc.bias": torch.zeros(3)},
               path)
    report, msg = _refusal(PANOPTIC, SMALL_R18, path)
    assert report.matched == 0
    assert "unconverted file of an unknown layout" in msg and str(path) in msg


def test_not_strict_warns_and_goes_on(official_instance, caplog):
    _, checkpointer = _load(PANOPTIC, SMALL_R18, official_instance)
    check_inference_weights(checkpointer.last_load_report, strict=False)
    assert "MODEL.WEIGHTS_STRICT is False" in caplog.text and "class count" in caplog.text
    with pytest.raises(IncompatibleWeightsError, match="no checkpoint was loaded"):
        check_inference_weights(None, strict=True, weights="")


def test_weights_strict_config_key_defaults_to_true():
    assert load_config(PANOPTIC).MODEL.WEIGHTS_STRICT is True
    assert load_config(PANOPTIC, ["MODEL.WEIGHTS_STRICT", "False"]).MODEL.WEIGHTS_STRICT is False


def _tiny_instance_release(tmp_path):
    """An mmdet-layout file of the synthetic tiny instance model: 4 thing classes (and a deep
    stem that the mmdet names do not describe either)."""
    from tests.helpers.tiny_training import tiny_train_opts

    cfg = load_config(REPO_ROOT / "configs/synthetic/instance/knet_R18_tiny.yaml",
                      tiny_train_opts(tmp_path / "x"))
    path = tmp_path / "tiny_instance_official.pth"
    save_mmcv(path, mmdet_layout(build_model(cfg)))
    return path


def test_eval_only_refuses_wrong_checkpoint(tiny_data, tmp_path):
    from detectron2.engine import default_argument_parser

    import train_net
    from tests.helpers.tiny_training import CONFIG, tiny_train_opts

    weights = _tiny_instance_release(tmp_path)
    args = default_argument_parser().parse_args(
        ["--config-file", str(CONFIG), "--eval-only", *tiny_train_opts(tmp_path / "out"),
         "MODEL.WEIGHTS", str(weights)]
    )
    with pytest.raises(SystemExit) as e:
        train_net.main(args)
    msg = str(e.value)
    assert msg.startswith("train_net.py --eval-only: MODEL.WEIGHTS " + str(weights))
    assert "another task or class count" in msg


def test_training_logs_one_line_summary_and_resume_is_strict(tiny_data, tmp_path, caplog):
    import train_net
    from tests.helpers.tiny_training import CONFIG, tiny_train_opts

    caplog.set_level(logging.INFO)
    backbone_only = tmp_path / "R-18-backbone.pth"
    model = build_model(load_config(CONFIG, tiny_train_opts(tmp_path / "x")))
    torch.save({"model": {k: v for k, v in model.state_dict().items()
                          if k.startswith("backbone.bottom_up.")}}, backbone_only)
    cfg = load_config(CONFIG, tiny_train_opts(tmp_path / "run", max_iter=3, workers=0)
                      + ["MODEL.WEIGHTS", str(backbone_only)])
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)  # heads missing: expected for training
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Initial weights")]
    assert len(lines) == 1 and str(backbone_only) in lines[0] and "missing" in lines[0]

    # --resume from a checkpoint of this run that does not fit the model: refused
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    torch.save({"model": {}}, run / "model_0000000.pth")
    (run / "last_checkpoint").write_text("model_0000000.pth")
    with pytest.raises(IncompatibleWeightsError, match=r"^--resume checkpoint .*model_0000000"):
        trainer.resume_or_load(resume=True)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets
    from tests.helpers.tiny_training import register_tiny

    root = tmp_path_factory.mktemp("tiny_data")
    ensure_synthetic_for_datasets([register_tiny(root)])
    return root
