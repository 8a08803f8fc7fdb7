"""Known host work, then known shim work; prints JSON with the real CPU each phase took
(time.thread_time is never virtualised). Note [Wall-time breakdown] (revati/shim/breakdown.py)."""
import json
import time

import torch

t0 = time.thread_time()
x = 0
while time.thread_time() - t0 < 0.5:       # the program's own host work: ~0.5 s of Python
    for i in range(10_000):
        x += i
host_s = time.thread_time() - t0

t1 = time.thread_time()
y = torch.zeros(64, device="cuda")          # first use: revati's one-time set-up (its shim work too)
for _ in range(3000):                        # shim work: each op is dispatched by revati
    y.add_(1)
ops_s = time.thread_time() - t1
print(json.dumps({"host_s": host_s, "ops_s": ops_s}))
