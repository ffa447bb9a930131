"""Same seed, same losses? Eight training steps of the panoptic 10-minute recipe (bf16 autocast,
no time budget), run from the repository root of a checkout; prints the loss of every step as
JSON with the checkout's commit. Run in two checkouts and compare (same_losses.sh)."""
import json
import subprocess

import torch
from detectron2.utils.env import seed_all_rng

from knet_d2.engine.defaults import get_knet_cfg
from knet_d2.engine.trainer import Trainer

torch.set_num_threads(2)
cfg = get_knet_cfg("configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml",
                   ["SOLVER.TIME_BUDGET.SECONDS", "0", "DATALOADER.NUM_WORKERS", "0"])
seed_all_rng(1)
torch.manual_seed(1)
model = Trainer.build_model(cfg)
model.train()
opt = Trainer.build_optimizer(cfg, model)
loader = iter(Trainer.build_train_loader(cfg))
losses = []
for _ in range(8):
    data = next(loader)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sum(model(data).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(float(loss))
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
print(json.dumps({"commit": commit.strip(), "losses": losses}))
