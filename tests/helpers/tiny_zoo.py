"""Small R-18 versions of the COCO R50 1x configs and official-layout releases of them.

The model zoo, predictor and inference-weights tests use them as offline stand-ins for the
released checkpoints.
"""
import torch
from detectron2.modeling import build_model

from tests.helpers.official_layouts import mmdet_layout, save_mmcv
from tests.helpers.paths import REPO_ROOT, load_config

TINY_YAML = """_BASE_: "{base}"
MODEL:
  WEIGHTS: ""
  DEVICE: "cpu"
  RESNETS: {{DEPTH: 18, RES2_OUT_CHANNELS: 64}}
  FPN: {{OUT_CHANNELS: 32}}
  KNET: {{NUM_HEADS: 4, FFN_DIM: 64, HIDDEN_DIM: 32, NUM_PROPOSALS: 5, NECK: {{CONV_DIM: 32}}}}
INPUT: {{MIN_SIZE_TEST: 64, MAX_SIZE_TEST: 128}}
"""
TINY = "tiny/knet_R18_panoptic.yaml"
TINY_INSTANCE = "tiny/knet_R18_instance.yaml"


def write_tiny_configs(root):
    """Small R-18 versions of the COCO R50 1x panoptic / instance configs under ``root``
    (their official layout is mmdet's, like the releases)."""
    for name, task in ((TINY, "panoptic"), (TINY_INSTANCE, "instance")):
        base = REPO_ROOT / f"configs/coco/{task}-segmentation/knet_R50_1x.yaml"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(TINY_YAML.format(base=base))
    return root


def release(config_path, path, seed=0):
    """Build the model of ``config_path`` and save it as an official mmdet release."""
    torch.manual_seed(seed)
    source = build_model(load_config(config_path)).eval()
    save_mmcv(path, mmdet_layout(source))
    return source

