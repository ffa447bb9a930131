"""2-process CPU (gloo) training through D2's launch() matches 1 process at the same total batch
(also with SOLVER.CHANNELS_LAST's hook, whose gradients must fit DDP's buckets)."""
import os
import tempfile
import warnings

import pytest
import torch
from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from tests.helpers.tiny_knet import make_input, tiny_cfg

# Four images with the same number of objects each, so per-process means and the global mean
# weight the images equally (D2/DDP semantics: gradients are averaged over processes).
CLASSES = [[0, 1], [2, 3], [1, 4], [0, 2]]


def _batch():
    return [make_input(64, 64, c, seed=10 + i) for i, c in enumerate(CLASSES)]


def _build(channels_last: bool = False):
    from detectron2.modeling import build_model

    from knet_d2.engine.channels_last import train_in_channels_last

    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.NORM = "FrozenBN"  # BN batch statistics would differ between 1 and 2 procs
    torch.manual_seed(0)
    model = build_model(cfg)
    if channels_last:
        train_in_channels_last(model)
    return model


def _one_step(model, images):
    """One SGD step; returns (loss dict as floats, flattened parameters after the step)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    losses = model(images)
    sum(losses.values()).backward()
    opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {k: v.item() for k, v in losses.items()}, flat


def _worker(out_dir, channels_last):
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    model = _build(channels_last)
    rank, world = comm.get_rank(), comm.get_world_size()
    images = _batch()[rank::world]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        losses, flat = _one_step(ddp, images)
    torch.save({"losses": losses, "params": flat, "warnings": [str(w.message) for w in caught]},
               os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_two_process_gloo_training_matches_one_process(channels_last):
    with tempfile.TemporaryDirectory() as out:
        launch(_worker, 2, num_machines=1, machine_rank=0, dist_url="auto",
               args=(out, channels_last))
        r0 = torch.load(os.path.join(out, "rank0.pt"))
        r1 = torch.load(os.path.join(out, "rank1.pt"))
    # DDP keeps replicas identical, and its gradient buckets fit every gradient's layout.
    assert torch.equal(r0["params"], r1["params"])
    assert not [w for w in r0["warnings"] + r1["warnings"] if "stride" in w.lower()]

    single = _build(channels_last)
    init = torch.cat([p.detach().flatten() for p in single.parameters()]).clone()
    losses, flat = _one_step(single, _batch())
    step_1p = flat - init
    step_2p = r0["params"] - init
    assert step_1p.abs().max() > 0
    # Same update up to the per-process normalisation of the mean losses.
    cos = torch.nn.functional.cosine_similarity(step_1p, step_2p, dim=0)
    assert cos > 0.98, cos
    rel = (step_1p - step_2p).norm() / step_1p.norm()
    assert rel < 0.2, rel
    # The mean over ranks of each loss term is close to the 1-process value.
    for k, v in losses.items():
        mean_2p = (r0["losses"][k] + r1["losses"][k]) / 2
        assert abs(mean_2p - v) <= 0.15 * abs(v) + 1e-3, (k, mean_2p, v)


# --------------------------------------------------------------------------------------------
# 2-process evaluation gathers every rank's predictions: same metrics as 1 process.
# --------------------------------------------------------------------------------------------
EVAL_PREFIX = "knet_test_dist_eval"


def _eval_cfg(data_root, out_dir):
    from detectron2.data import DatasetCatalog

    from knet_d2.data.datasets.register_synthetic import register_synthetic_datasets
    from tests.helpers.paths import REPO_ROOT, load_config

    name = f"{EVAL_PREFIX}_panoptic_val"
    if name not in DatasetCatalog.list():
        register_synthetic_datasets(data_root, {"val": 7}, image_size=64, prefix=EVAL_PREFIX)
    cfg = load_config(
        REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml",
        ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
         "INPUT.MIN_SIZE_TEST", "64", "MODEL.KNET.NUM_PROPOSALS", "8",
         "MODEL.KNET.TEST.INSTANCE_SCORE_THRESH", "0.0", "OUTPUT_DIR", str(out_dir)],
    )
    cfg.freeze()
    return cfg


def _eval_worker(data_root, out_dir, weights):
    import train_net
    from knet_d2.engine import KNetCheckpointer

    torch.set_num_threads(1)
    cfg = _eval_cfg(data_root, out_dir)
    model = train_net.Trainer.build_model(cfg)
    KNetCheckpointer(model).load(weights)
    results = train_net.Trainer.test(cfg, model)
    if comm.is_main_process():
        flat = {f"{g}/{k}": float(v) for g, r in results.items() for k, v in r.items()}
        torch.save(flat, os.path.join(out_dir, f"results_{comm.get_world_size()}.pt"))


def _saved_predictions(inference_dir):
    """The predictions the evaluators wrote (gathered from all ranks), in a canonical order."""
    import json

    def load(name):
        with open(os.path.join(inference_dir, name)) as f:
            return json.load(f)

    panoptic = {
        a["image_id"]: [(s["category_id"], round(s["score"], 5)) for s in a["segments_info"]]
        for a in load("predictions.json")["annotations"]
    }
    instances = sorted(
        (r["image_id"], r["category_id"], round(r["score"], 5), r["segmentation"]["counts"])
        for r in load("coco_instances_results.json")
    )
    semantic = sorted(
        (os.path.basename(r["file_name"]), r["category_id"], r["segmentation"]["counts"])
        for r in load("sem_seg_predictions.json")
    )
    return panoptic, instances, semantic


def test_two_process_gloo_evaluation_matches_one_process(tmp_path):
    import math

    import train_net
    from knet_d2.data.datasets.register_synthetic import ensure_synthetic_for_datasets

    data_root = tmp_path / "data"
    cfg = _eval_cfg(data_root, tmp_path)
    ensure_synthetic_for_datasets(cfg.DATASETS.TEST)
    # A briefly trained model: its predictions differ per image, so metrics computed from a
    # subset of the images (a rank's predictions lost in the gather) would differ. 60
    # iterations: after 30 on the generator-v2 images no mask probability reaches 0.5 yet, and
    # the panoptic output is empty.
    train_cfg = cfg.clone()
    train_cfg.defrost()
    train_cfg.merge_from_list([
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "60", "SOLVER.STEPS", "(59,)",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.BASE_LR", "0.003", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "t"),
    ])
    train_cfg.freeze()
    torch.set_num_threads(1)
    # The model's initialisation must not depend on which tests ran before in this process.
    seed_all_rng(train_cfg.SEED)
    trainer = train_net.Trainer(train_cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    weights = str(tmp_path / "t" / "model_final.pth")

    for world in (1, 2):
        out = tmp_path / f"eval{world}"
        out.mkdir()
        launch(_eval_worker, world, num_machines=1, machine_rank=0, dist_url="auto",
               args=(str(data_root), str(out), weights))
    r1 = torch.load(tmp_path / "eval1" / "results_1.pt", weights_only=True)
    r2 = torch.load(tmp_path / "eval2" / "results_2.pt", weights_only=True)
    assert sorted(r1) == sorted(r2)
    for key in ("panoptic_seg/PQ", "sem_seg/mIoU", "sem_seg/pACC", "segm/AP", "bbox/AP"):
        assert key in r1
    assert r1["sem_seg/mIoU"] > 0 and r1["sem_seg/pACC"] > 0
    # The main process evaluated the predictions of every image, identical to 1 process.
    pan1, ins1, sem1 = _saved_predictions(tmp_path / "eval1" / "inference")
    assert _saved_predictions(tmp_path / "eval2" / "inference") == (pan1, ins1, sem1)
    assert sorted(pan1) == sorted({r[0] for r in ins1}) == list(range(7))
    assert len(sem1) >= 7 and sum(map(len, pan1.values())) > 0
    for k in r1:
        a, b = r1[k], r2[k]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6 * max(1.0, abs(a)), (k, a, b)
