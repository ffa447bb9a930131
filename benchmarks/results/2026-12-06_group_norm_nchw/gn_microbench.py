"""GroupNorm(32, 64) on a bf16 channels-last batch of 8 under bf16 autocast on the CPU, 2 threads:
forward + backward of the direct call against a round trip through NCHW (what
knet_d2/engine/channels_last.py does while a model trains), 30 timed calls after 3 warm-up calls,
at 16 / 32 / 64 px. Usage: python gn_microbench.py OUT.json"""
import json
import sys
import time

import torch

torch.set_num_threads(2)
gn = torch.nn.GroupNorm(32, 64)


def direct(x):
    return gn(x)


def round_trip(x):
    return gn(x.contiguous()).contiguous(memory_format=torch.channels_last)


rows = []
for hw in (16, 32, 64):
    ms = {}
    for fn in (direct, round_trip):
        x = torch.randn(8, 64, hw, hw).to(torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)

        def step(fn=fn, x=x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = fn(x)
            y.float().sum().backward()

        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(30):
            step()
        ms[fn.__name__] = (time.perf_counter() - t0) / 30 * 1e3
    rows.append({"px": hw, "direct_ms": ms["direct"], "round_trip_ms": ms["round_trip"],
                 "direct_over_round_trip": ms["direct"] / ms["round_trip"]})
    print(rows[-1], flush=True)
json.dump(rows, open(sys.argv[1], "w"), indent=1)
