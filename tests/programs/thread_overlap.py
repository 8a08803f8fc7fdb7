"""Two threads of one process: a worker keeps the GPU busy (a GEMM and a read-back per step),
the main thread sleeps 10 ms five times, then stops the worker. Prints JSON: when the main
thread woke (virtual s since start) and how many steps the worker ran.

Note [Threads in virtual time]: the sleeps overlap the worker's GPU time, so each wakes at its
deadline (plus at most one worker step), not after the worker has finished all its steps."""
import json
import threading
import time

import torch

x = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
stop = threading.Event()
steps = []


def worker():
    while not stop.is_set() and len(steps) < 400:
        (x @ x).sum().item()      # a synchronisation per step, as a decode step has
        steps.append(time.perf_counter())


t0 = time.perf_counter()
th = threading.Thread(target=worker)
th.start()
woke = []
for _ in range(5):
    time.sleep(0.010)
    woke.append(time.perf_counter() - t0)
stop.set()
th.join()
step_s = (steps[-1] - steps[0]) / max(1, len(steps) - 1)
print(json.dumps({"woke_s": woke, "worker_steps": len(steps), "step_s": step_s}))
