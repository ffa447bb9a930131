"""Every YAML under configs/ loads with add_knet_config, and the K-Net keys behave."""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from knet_d2 import add_knet_config
from tests.helpers.paths import REPO_ROOT, load_config

CONFIGS = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {p.relative_to(REPO_ROOT / "configs").as_posix() for p in CONFIGS}
    for required in [
        "coco/panoptic-segmentation/knet_R50_1x.yaml",
        "coco/panoptic-segmentation/knet_R50_ms3x.yaml",
        "coco/panoptic-segmentation/knet_R101_ms3x.yaml",
        "coco/instance-segmentation/knet_R50_1x.yaml",
        "coco/instance-segmentation/knet_R50_ms3x.yaml",
        "coco/instance-segmentation/knet_R101_ms3x.yaml",
        "coco/instance-segmentation/knet_R101_N256_ms3x.yaml",
        "panoptic/knet_r101.yaml",
    ]:
        assert required in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_config_loads(path: Path):
    cfg = load_config(path)
    if path.name.startswith("Base-") and "META_ARCHITECTURE" not in path.read_text():
        return  # a schedule/input fragment, merged into the real configs through _BASE_
    assert cfg.MODEL.META_ARCHITECTURE in {"KNet", "SemanticSegmentor"}
    if cfg.MODEL.META_ARCHITECTURE == "KNet":
        t = cfg.MODEL.KNET.TEST
        assert t.SEMANTIC_ON or t.INSTANCE_ON or t.PANOPTIC_ON
        assert cfg.MODEL.BACKBONE.NAME


def test_r101_panoptic_matches_official_recipe():
    cfg = load_config(REPO_ROOT / "configs/panoptic/knet_r101.yaml")
    assert cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.MODEL.KNET.NUM_THING_CLASSES == 80 and cfg.MODEL.KNET.NUM_STUFF_CLASSES == 53
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.BASE_LR == 1e-4
    assert cfg.SOLVER.BACKBONE_MULTIPLIER == 0.25 and cfg.SOLVER.WEIGHT_DECAY == 0.05
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 1.0
    assert cfg.SOLVER.WARMUP_ITERS == 1000 and cfg.SOLVER.WARMUP_FACTOR == 0.001
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 800)
    assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range"
    k = cfg.MODEL.KNET
    assert (k.CLASS_WEIGHT, k.MASK_WEIGHT, k.DICE_WEIGHT, k.SEG_WEIGHT, k.RANK_WEIGHT) == (
        2.0, 1.0, 4.0, 1.0, 0.1)
    assert (k.MATCHER.COST_CLASS, k.MATCHER.COST_MASK, k.MATCHER.COST_DICE) == (2.0, 1.0, 4.0)
    assert k.TEST.INSTANCE_SCORE_THRESH == 0.3 and k.TEST.OVERLAP_THRESHOLD == 0.6


def test_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  KNET:\n    NUM_PROPOSAL: 100\n")  # typo: NUM_PROPOSALS
    cfg = get_cfg()
    add_knet_config(cfg)
    with pytest.raises(KeyError, match="NUM_PROPOSAL"):
        cfg.merge_from_file(str(bad))


def test_knet_keys_need_add_knet_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("MODEL:\n  KNET:\n    NUM_PROPOSALS: 7\n")
    with pytest.raises(KeyError):
        get_cfg().merge_from_file(str(good))
    cfg = get_cfg()
    add_knet_config(cfg)
    cfg.merge_from_file(str(good))
    assert cfg.MODEL.KNET.NUM_PROPOSALS == 7


def _flat(node, prefix=""):
    """``{"A.B.C": value}`` of a nested config dict."""
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


# Config keys newer than some recorded runs, with the value that means "off".
KEYS_ADDED_SINCE_THE_RECORDED_RUNS = {
    "SOLVER.TIME_BUDGET.SECONDS": 0, "SOLVER.TIME_BUDGET.FIT_PERIOD": 100,
    "MODEL.KNET.MATCHER.ONE_TO_MANY_COPIES": 1, "MODEL.KNET.MATCHER.ONE_TO_MANY_STAGES": 0,
    "MODEL.KNET.DENOISING.ENABLED": False, "MODEL.KNET.DENOISING.SHIFT": 0.2,
    "MODEL.KNET.DENOISING.SCALE": 0.2, "MODEL.KNET.DENOISING.LOSS_WEIGHT": 1.0,
    "MODEL.KNET.SOFT_GROUPING": False, "MODEL.KNET.SEG_CE_WEIGHT": 0.0,
    "MODEL.KNET.IMAGE_PROPOSALS": 0, "MODEL.KNET.CROP_CLASSIFIER.ENABLED": False,
    "MODEL.KNET.CROP_CLASSIFIER.SIZE": 16, "MODEL.KNET.CROP_CLASSIFIER.CHANNELS": 32,
    "MODEL.KNET.CROP_CLASSIFIER.NUM_CONVS": 4, "MODEL.KNET.CROP_CLASSIFIER.MARGIN": 0.25,
    "MODEL.KNET.THING_SOFTMAX": False, "MODEL.KNET.NO_OBJECT_WEIGHT": 0.1,
}


@pytest.mark.parametrize("config, recorded, iterations, channels_last", [
    ("semantic/knet_upernet_tiny_16k_bf16.yaml", "2026-12-05_semantic_16k_bf16_channels_last",
     4650, True),
    ("semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml",
     "2026-12-06_semantic_augmentations/N1", 5200, True),
    ("panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml",
     "2026-12-06_thing_softmax/TS1", 5000, True),
    ("instance/knet_R18_tiny_16k_bf16_keep_freed.yaml",
     "2026-12-06_instance_stride4_alpha/INA1", 5000, False),
])
def test_the_10_minute_configs_are_the_recipes_of_their_recorded_runs(
        config, recorded, iterations, channels_last):
    """Each 10-minute config in configs/synthetic/ resolves to the config its recorded run
    trained with (SEED 1; for the three recipes, their runs with the time budget), key for key
    (the first semantic one was given there as command-line overrides)."""
    import yaml

    recorded = REPO_ROOT / "benchmarks/results" / recorded
    run = _flat(yaml.safe_load((recorded / "config.yaml").read_text()))
    cfg = load_config(REPO_ROOT / "configs/synthetic" / config)
    mine = _flat(yaml.safe_load(cfg.dump()))
    # keys added after the run, at the values that leave its training unchanged
    added = {k: mine.pop(k) for k in mine.keys() - run.keys()}
    assert added == {k: v for k, v in KEYS_ADDED_SINCE_THE_RECORDED_RUNS.items() if k in added}
    assert mine.keys() == run.keys()
    differ = {k: (mine[k], run[k]) for k in mine if mine[k] != run[k]}
    assert set(differ) == {"OUTPUT_DIR"}, differ
    assert (mine["SOLVER.MAX_ITER"], mine["SOLVER.CHANNELS_LAST"]) == (iterations, channels_last)
