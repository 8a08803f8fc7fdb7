"""Measures the single-process invariants of virtual time (activates revati itself).

Prints one JSON object; tests/test_shim_invariants.py asserts on it.
"""
import asyncio
import json
import sys
import time

import early_bound  # binds time.perf_counter BEFORE revati is activated

from revati.shim.activate import activate

rt = activate({"gpu": sys.argv[1] if len(sys.argv) > 1 else "h100", "count_host_cpu": False})
import torch  # noqa: E402
out = {}
real = __import__("revati.shim.vtime", fromlist=["REAL"]).REAL["perf_counter"]

# 1. a chain of ops with known predicted times, then synchronize
a = torch.empty(2048, 4096, device="cuda", dtype=torch.float16)
b = torch.empty(4096, 4096, device="cuda", dtype=torch.float16)
torch.cuda.synchronize()
pred = rt.predictor
gemm_ns = pred.predict_ns("gemm", {"m": 2048, "n": 4096, "k": 4096}, "fp16")
t0 = time.perf_counter_ns()
for _ in range(5):
    c = a @ b
t_launch = time.perf_counter_ns()
torch.cuda.synchronize()
t_sync = time.perf_counter_ns()
out["chain"] = {"gemm_ns": gemm_ns, "launch_ns": t_launch - t0, "sync_ns": t_sync - t0,
                "overhead_ns": rt.config.launch_overhead_ns}

# 2. sleeps
w0, v0 = real(), time.perf_counter()
time.sleep(30)
out["sleep"] = {"wall_s": real() - w0, "virtual_s": time.perf_counter() - v0}


async def main():
    w0, v0 = real(), time.perf_counter()
    await asyncio.sleep(30)
    return {"wall_s": real() - w0, "virtual_s": time.perf_counter() - v0}

out["asyncio_sleep"] = asyncio.run(main())

# 3. early-bound clock
v0 = time.perf_counter()
time.sleep(2)
out["early_bound"] = {"module_delta_s": early_bound.now() - v0}

# 4. OOM
free, total = torch.cuda.mem_get_info()
try:
    torch.empty(int(total), dtype=torch.uint8, device="cuda")
    out["oom"] = "no error"
except torch.cuda.OutOfMemoryError as exc:
    out["oom"] = str(exc)
out["memory"] = {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
                 "free": torch.cuda.mem_get_info()[0], "total": total}

# 5. CUDA graph capture and replay
x = torch.empty(512, 4096, device="cuda", dtype=torch.float16)
g = torch.cuda.CUDAGraph()
s = torch.cuda.Stream()
with torch.cuda.stream(s):
    for _ in range(2):
        y = x @ b
torch.cuda.current_stream().wait_stream(s)
with torch.cuda.graph(g):
    y = x @ b
    z = y + y
torch.cuda.synchronize()
t0 = time.perf_counter_ns()
g.replay()
torch.cuda.synchronize()
out["graph"] = {"captured_ns": g.captured_ns, "kernels": g.captured_kernels, "replay_sync_ns": time.perf_counter_ns() - t0,
                "graph_overhead_ns": rt.config.graph_launch_overhead_ns}

# 6. the device-generic torch.Event is an event of the virtual GPU: waiting on it waits for the
# kernels recorded before it
torch.cuda.synchronize()
t0 = time.perf_counter_ns()
for _ in range(3):
    c = a @ b
ev = torch.Event()
ev.record()
ev.synchronize()
out["generic_event"] = {"sync_ns": time.perf_counter_ns() - t0, "query": ev.query()}
print(json.dumps(out))
