"""The initial mask logits of the panoptic 10-minute recipe's model, with KERNEL_INIT_STD 1.0
(official) and 0.125, on one training batch (the diagnostic behind plan.txt, kept afterwards).

Run from the repository root: DETECTRON2_DATASETS=output/d2data python
benchmarks/results/2026-12-06_kernel_init_std/init_logits.py
configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml
"""
import subprocess
import sys

import torch
from detectron2.modeling import build_model

import knet_d2.data  # noqa: F401  (registers the synthetic datasets)
from knet_d2.collect_env import machine_line
from knet_d2.engine.defaults import get_knet_cfg
from knet_d2.engine.trainer import Trainer

print("commit", subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip())
print("machine", machine_line())
torch.manual_seed(0)
for std in ["1.0", "0.125"]:
    cfg = get_knet_cfg(sys.argv[1], ["MODEL.KNET.KERNEL_INIT_STD", std])
    model = build_model(cfg)
    model.train()
    batch = next(iter(Trainer.build_train_loader(cfg)))
    with torch.no_grad():
        images = model.preprocess_image(batch)
        loc, sem = model.neck(model.backbone(images.tensor))
        m = model.kernel_head(loc, sem)["mask_logits"]
        p = m.sigmoid()
    saturated = ((p < 0.02) | (p > 0.98)).float().mean()
    print(f"KERNEL_INIT_STD {std}: initial mask logits std {m.std():.2f}, mean {m.mean():.2f}, "
          f"share saturated (sigmoid < 0.02 or > 0.98) {saturated:.2f}, "
          f"share > 0.5 {(p > 0.5).float().mean():.2f}")
