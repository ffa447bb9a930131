"""In-process paired timing of channels-last training for the instance recipe with the GroupNorm
hooks on main (plan.txt): the instance recipe's
trainer with SOLVER.CHANNELS_LAST True, 40 warm-up steps, then 12 blocks of 25 steps taking
turns with the backbone's channels-last hook on (A) and removed (B; the GroupNorm hooks then see
NCHW input and do nothing), the same data stream, one process:
    PYTHONPATH=. python benchmarks/results/2026-12-06_instance_channels_last_gn/inprocess.py \
        OUT.json --config-file configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml \
        OUTPUT_DIR /tmp/cl_inprocess SOLVER.TIME_BUDGET.SECONDS 0 SOLVER.CHANNELS_LAST True
"""
import json
import statistics
import sys
import time

import torch
from detectron2.engine import default_argument_parser
from detectron2.utils.events import EventStorage

import train_net
from knet_d2.engine import channels_last as cl

out_json = sys.argv[1]
args = default_argument_parser().parse_args(sys.argv[2:])
cfg = train_net.setup(args)
train_net.prepare_datasets(cfg)
trainer = train_net.Trainer(cfg)
trainer.resume_or_load(resume=False)
loop = trainer._trainer
print("hooks from", cl.__file__, flush=True)
norms = [m for m in trainer.model.modules() if isinstance(m, torch.nn.GroupNorm)]


def set_hooks(on: bool) -> None:
    backbone = trainer.model.backbone
    hooks = backbone._forward_pre_hooks
    for k in [k for k, f in hooks.items() if f is cl._channels_last_batch]:
        del hooks[k]
    if on:
        backbone.register_forward_pre_hook(cl._channels_last_batch)


blocks = {"A": [], "B": []}
with EventStorage(0) as storage:
    trainer.storage = storage
    it = 0
    for _ in range(40):
        loop.iter = it
        loop.run_step()
        it += 1
    for block in range(12):
        name = "AB"[block % 2]
        set_hooks(name == "A")
        t0 = time.perf_counter()
        for _ in range(25):
            loop.iter = it
            loop.run_step()
            it += 1
        blocks[name].append((time.perf_counter() - t0) / 25)
        print(name, block, f"{blocks[name][-1]:.4f} s/step", flush=True)
ratios = [b / a for a, b in zip(blocks["A"], blocks["B"])]
summary = {
    "norms": len(norms),
    "s_per_step": blocks,
    "median_A": statistics.median(blocks["A"]),
    "median_B": statistics.median(blocks["B"]),
    "B_over_A_per_pair": ratios,
    "median_B_over_A": statistics.median(ratios),
    "pairs_B_over_A_above_1": sum(r > 1 for r in ratios),
}
print(json.dumps(summary, indent=1))
json.dump(summary, open(out_json, "w"), indent=1)
