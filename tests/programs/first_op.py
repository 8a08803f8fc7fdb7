"""The same launch + synchronize ten times; prints each one's virtual duration in ms (JSON).

usage: revati emulate -- python first_op.py
On a virtual GPU the first must cost the program what the tenth does: the shim's own warm-up
(imports torch makes only because of the tensor subclass, caches, the predictor) is not the
program's time.
"""
import json
import time

import torch

x = torch.empty(4096, 4096, device="cuda", dtype=torch.float16)
durations_ms = []
for _ in range(10):
    t0 = time.perf_counter()
    y = x @ x
    torch.cuda.synchronize()
    durations_ms.append((time.perf_counter() - t0) * 1e3)
print(json.dumps(durations_ms))
