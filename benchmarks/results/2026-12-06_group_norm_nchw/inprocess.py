"""In-process paired timing of the GroupNorm hooks (plan_inprocess.txt): the panoptic recipe's
trainer, 40 warm-up steps, then 12 blocks of 25 steps taking turns with the hooks of
knet_d2/engine/channels_last.py on (A) and removed (B), the same data stream, one process.
Run from the checkout that has the hooks:
    python benchmarks/results/2026-12-06_group_norm_nchw/inprocess.py OUT.json \
        --config-file configs/synthetic/panoptic/knet_R18_tiny_16k_bf16_keep_freed.yaml \
        OUTPUT_DIR /tmp/gn_inprocess SOLVER.TIME_BUDGET.SECONDS 0
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
    for m in norms:
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            for k in [k for k, f in hooks.items() if f in (
                    cl._group_norm_input_nchw, cl._group_norm_output_channels_last)]:
                del hooks[k]
        setattr(m, cl._NCHW_GROUP_NORM, False)
        if on:
            m.register_forward_pre_hook(cl._group_norm_input_nchw)
            m.register_forward_hook(cl._group_norm_output_channels_last)


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
