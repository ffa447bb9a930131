"""Tiny export models, tolerances and comparisons shared by the ONNX / TorchScript tests.

Random-init models (seed 0) of the synthetic configs, built once per process.
"""
import os
import subprocess
import sys

import torch
from detectron2.modeling import build_model
from torch import nn

from tests.helpers.paths import REPO_ROOT, load_config

CONFIGS = {
    "panoptic": "configs/synthetic/panoptic/knet_R18_tiny.yaml",
    "instance": "configs/synthetic/instance/knet_R18_tiny.yaml",
    "semantic": "configs/synthetic/semantic/knet_upernet_tiny.yaml",  # PPM: pool substitution
    "semantic_fcn": "configs/synthetic/semantic/knet_fcn_tiny.yaml",
}
ATOL = 1e-3
RTOL = 1e-5  # semantic logits of random-init models reach |100|: float32 noise scales with it

_MODELS = {}


def get_model(task: str) -> nn.Module:
    if task not in _MODELS:
        torch.manual_seed(0)
        # The exported graphs compute in NCHW on the whole padded batch, so the reference
        # forward does too (channels-last inference agrees up to float rounding, and a split
        # batch equals single-image calls: tests/test_knet_model.py).
        cfg = load_config(REPO_ROOT / CONFIGS[task],
                          ["MODEL.DEVICE", "cpu", "MODEL.KNET.TEST.CHANNELS_LAST", "off",
                           "MODEL.KNET.TEST.SPLIT_BATCH", "off"])
        _MODELS[task] = build_model(cfg).eval()
    return _MODELS[task]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def top2_gap(scores: torch.Tensor) -> torch.Tensor:
    """(K, H, W) -> (H, W) difference between the best and second-best value."""
    v = scores.topk(2, dim=0).values
    return v[0] - v[1]


def assert_argmax_equal_up_to_ties(ref: torch.Tensor, got: torch.Tensor, gap: torch.Tensor,
                                   eps: float) -> int:
    """Argmax maps ``ref``/``got`` (H, W) agree except at pixels whose PyTorch decision gap
    is <= eps (ties within the float difference); such pixels are <= 0.1% of the image."""
    diff = ref != got
    assert bool((gap[diff] <= eps).all()), f"non-tie pixels differ: gaps {gap[diff].max()}"
    assert int(diff.sum()) <= 1e-3 * diff.numel(), int(diff.sum())
    return int(diff.sum())


def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools/export_model.py"), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
