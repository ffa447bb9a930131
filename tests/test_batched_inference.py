"""Batched inference: ``knet_d2.Predictor(batch_size=...)`` and ``TEST.IMS_PER_BATCH`` give the
per-image results (bit-identical up to float reassociation where the padded size is the same;
outputs cropped to each image's own size where it is not), for K-Net and SemanticSegmentor."""
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, load_config
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

import train_net
from knet_d2 import Predictor
from knet_d2.data.datasets.register_synthetic import (
    ensure_synthetic_for_datasets,
    register_synthetic_datasets,
)
from knet_d2.data.image_io import read_image
from knet_d2.engine import KNetCheckpointer

PREFIX = "knet_test_batched"
VAL = f"{PREFIX}_panoptic_val"


def panoptic_categories(output: dict) -> torch.Tensor:
    """(H, W) category of each pixel's panoptic segment (-1: void)."""
    seg, infos = output["panoptic_seg"]
    categories = torch.full_like(seg, -1)
    for info in infos:
        categories[seg == info["id"]] = info["category_id"]
    return categories


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, weights) of a panoptic K-Net R18 trained 30 iterations on synthetic images."""
    root = tmp_path_factory.mktemp("batched")
    if VAL not in DatasetCatalog.list():
        register_synthetic_datasets(root / "data", {"val": 6}, image_size=64, prefix=PREFIX)
    cfg = load_config(
        REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml",
        ["DATASETS.TRAIN", f"('{VAL}',)", "DATASETS.TEST", f"('{VAL}',)",
         "INPUT.MIN_SIZE_TEST", "64", "INPUT.MIN_SIZE_TRAIN", "(64,)",
         "MODEL.KNET.NUM_PROPOSALS", "8", "MODEL.KNET.TEST.INSTANCE_SCORE_THRESH", "0.0",
         "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "30", "SOLVER.STEPS", "(29,)",
         "SOLVER.WARMUP_ITERS", "1", "SOLVER.BASE_LR", "0.003", "DATALOADER.NUM_WORKERS", "0",
         "OUTPUT_DIR", str(root / "train")],
    )
    cfg.freeze()
    ensure_synthetic_for_datasets(cfg.DATASETS.TEST)
    seed_all_rng(cfg.SEED)  # the model's init must not depend on the tests run before
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return cfg, str(root / "train" / "model_final.pth")


def val_images(n):
    return [read_image(d["file_name"], format="BGR") for d in DatasetCatalog.get(VAL)[:n]]


def test_predictor_batches_equal_per_image_at_equal_size(trained):
    cfg, weights = trained
    images = val_images(5)  # batches of 2, 2, 1: the last one is short
    single = Predictor(cfg, weights)(images)
    batched = Predictor(cfg, weights, batch_size=2)(images)
    assert len(batched) == len(images)
    for one, many in zip(single, batched):
        assert torch.equal(panoptic_categories(one), panoptic_categories(many))
        torch.testing.assert_close(many["instances"].scores, one["instances"].scores,
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(many["sem_seg"], one["sem_seg"], rtol=1e-4, atol=1e-5)


def test_predictor_mixed_sizes_are_cropped_to_each_image(trained):
    """Images of different sizes in one batch: each output has its own image's size, the
    largest image (no extra padding) gives its per-image result, and the padded smaller ones
    agree with their per-image result on >= 90% of the pixels (measured: 100% here)."""
    cfg, weights = trained
    full = val_images(1)[0]
    images = [full[:40, :56].copy(), full, full[8:, :48].copy()]
    single = Predictor(cfg, weights)(images)
    batched = Predictor(cfg, weights, batch_size=3)(images)
    for image, one, many in zip(images, single, batched):
        h, w = image.shape[:2]
        assert many["panoptic_seg"][0].shape == (h, w)
        assert many["instances"].image_size == (h, w)
        assert many["sem_seg"].shape[-2:] == (h, w)
        same = (panoptic_categories(one) == panoptic_categories(many)).float().mean()
        assert same >= 0.9
    assert torch.equal(panoptic_categories(single[1]), panoptic_categories(batched[1]))


def test_eval_batch_size_gives_the_per_image_metrics(trained, tmp_path):
    cfg, weights = trained
    results = {}
    for batch in (1, 3):
        eval_cfg = cfg.clone()
        eval_cfg.defrost()
        eval_cfg.merge_from_list(["TEST.IMS_PER_BATCH", str(batch),
                                  "OUTPUT_DIR", str(tmp_path / f"b{batch}")])
        eval_cfg.freeze()
        assert train_net.Trainer.build_test_loader(eval_cfg, VAL).batch_size == batch
        model = train_net.Trainer.build_model(eval_cfg)
        KNetCheckpointer(model).load(weights)
        results[batch] = train_net.Trainer.test(eval_cfg, model)
    flat = {b: {f"{g}/{k}": float(v) for g, r in res.items() for k, v in r.items()
                if not np.isnan(float(v))} for b, res in results.items()}
    assert {"panoptic_seg/PQ", "segm/AP", "sem_seg/mIoU"} <= set(flat[1])
    assert flat[1].keys() == flat[3].keys()
    for key, value in flat[1].items():
        assert abs(flat[3][key] - value) <= 0.1, key


def test_semantic_segmentor_crops_each_image_of_a_batch():
    """D2's SemanticSegmentor with the semantic K-Net head: B=2 images of different sizes give
    outputs of each image's own size; the larger one equals its single-image output."""
    cfg = load_config(REPO_ROOT / "configs/synthetic/semantic/knet_fcn_tiny.yaml",
                      ["MODEL.DEVICE", "cpu"])
    seed_all_rng(0)
    model = build_model(cfg).eval()
    big = torch.randint(0, 255, (3, 64, 64)).float()
    small = big[:, 5:45, :50].clone()
    inputs = [{"image": small, "height": 40, "width": 50}, {"image": big, "height": 64,
                                                           "width": 64}]
    with torch.no_grad():
        batched = model(inputs)
        alone = model(inputs[1:])[0]
    assert batched[0]["sem_seg"].shape[-2:] == (40, 50)
    assert batched[1]["sem_seg"].shape[-2:] == (64, 64)
    torch.testing.assert_close(batched[1]["sem_seg"], alone["sem_seg"], rtol=1e-3, atol=1e-3)


def test_predictor_batch_size_must_be_positive(trained):
    cfg, weights = trained
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        Predictor(cfg, weights, batch_size=0)
