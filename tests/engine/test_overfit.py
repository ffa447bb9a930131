"""K-Net learns: a short overfit on a few synthetic images through train_net's Trainer (dataset
mapper, AdamW, full-model clipping) reaches a high PQ measured by D2's COCOPanopticEvaluator."""
import os

import pytest
import torch

import train_net
from knet_d2.data.datasets.register_synthetic import register_synthetic_datasets
from tests.helpers.paths import REPO_ROOT, load_config


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    register_synthetic_datasets(root, {"overfit": 4}, image_size=96, prefix="knet_test_overfit")
    return root


def test_overfit_reaches_high_pq(tiny_synthetic, tmp_path):
    torch.manual_seed(0)
    cfg = load_config(
        REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml",
        [
            "DATASETS.TRAIN", "('knet_test_overfit_panoptic_overfit',)",
            "DATASETS.TEST", "('knet_test_overfit_panoptic_overfit',)",
            "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96",
            "INPUT.RANDOM_FLIP", "none",
            "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.002",
            "SOLVER.MAX_ITER", "300", "SOLVER.STEPS", "(250,)", "SOLVER.WARMUP_ITERS", "20",
            "DATALOADER.NUM_WORKERS", "0",
            "MODEL.KNET.TEST.INSTANCE_ON", "False", "MODEL.KNET.TEST.SEMANTIC_ON", "False",
            "OUTPUT_DIR", str(tmp_path),
        ],
    )
    cfg.freeze()
    train_net.prepare_datasets(cfg)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert os.path.isfile(os.path.join(tmp_path, "model_final.pth"))
    results = train_net.Trainer.test(cfg, trainer.model)
    pq = results["panoptic_seg"]["PQ"]
    assert pq >= 70.0, results["panoptic_seg"]
