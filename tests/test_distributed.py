"""2-process CPU (gloo) training through D2's launch() matches 1 process at the same total batch."""
import os
import tempfile

import torch
from detectron2.engine import launch
from detectron2.utils import comm
from test_knet_model import make_input, tiny_cfg

# Four images with the same number of objects each, so per-process means and the global mean
# weight the images equally (D2/DDP semantics: gradients are averaged over processes).
CLASSES = [[0, 1], [2, 3], [1, 4], [0, 2]]


def _batch():
    return [make_input(64, 64, c, seed=10 + i) for i, c in enumerate(CLASSES)]


def _build():
    from detectron2.modeling import build_model

    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.NORM = "FrozenBN"  # BN batch statistics would differ between 1 and 2 procs
    torch.manual_seed(0)
    return build_model(cfg)


def _one_step(model, images):
    """One SGD step; returns (loss dict as floats, flattened parameters after the step)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    losses = model(images)
    sum(losses.values()).backward()
    opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {k: v.item() for k, v in losses.items()}, flat


def _worker(out_dir):
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    model = _build()
    rank, world = comm.get_rank(), comm.get_world_size()
    images = _batch()[rank::world]
    ddp = DistributedDataParallel(model, find_unused_parameters=False)
    losses, flat = _one_step(ddp, images)
    torch.save({"losses": losses, "params": flat}, os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_process_gloo_training_matches_one_process():
    with tempfile.TemporaryDirectory() as out:
        launch(_worker, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
        r0 = torch.load(os.path.join(out, "rank0.pt"))
        r1 = torch.load(os.path.join(out, "rank1.pt"))
    # DDP keeps replicas identical.
    assert torch.equal(r0["params"], r1["params"])

    single = _build()
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
