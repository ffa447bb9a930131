"""A tiny synthetic panoptic training run: the config, its opts and the 8-image split."""
from tests.helpers.paths import REPO_ROOT

CONFIG = REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml"
PREFIX = "knet_test_resume"
TRAIN = f"{PREFIX}_panoptic_tiny"
MAX_ITER, PERIOD = 10, 3  # checkpoints after iterations 2, 5, 8 and model_final


def tiny_train_opts(output_dir, max_iter=MAX_ITER, period=PERIOD, workers=1) -> list:
    """Opts that make the synthetic panoptic config train in ~0.2 s per iteration on a CPU."""
    return [
        "OUTPUT_DIR", str(output_dir), "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST", "()",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", str(period), "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.STEPS", f"({max_iter - 2},)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "MODEL.KNET.NUM_PROPOSALS", "8", "DATALOADER.NUM_WORKERS", str(workers), "SEED", "3",
    ]


def register_tiny(root) -> str:
    """Register (once per process) the 8-image, 64 px synthetic split under ``root``."""
    from detectron2.data import DatasetCatalog

    from knet_d2.data.datasets.register_synthetic import register_synthetic_datasets

    if TRAIN not in DatasetCatalog.list():
        register_synthetic_datasets(root, {"tiny": 8}, image_size=64, prefix=PREFIX)
    return TRAIN


def save_untrained(config, folder, seed: int = 0):
    """A D2 checkpoint (``folder/untrained.pth``) of the model of ``config`` with random
    weights (``torch.manual_seed(seed)``), for scripts that load a trained one."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from knet_d2.engine.defaults import get_knet_cfg
    from train_net import Trainer

    torch.manual_seed(seed)
    model = Trainer.build_model(get_knet_cfg(str(config), ["MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(model, save_dir=str(folder)).save("untrained")
    return folder / "untrained.pth"
