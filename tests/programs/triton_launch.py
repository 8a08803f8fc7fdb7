"""Triton kernels launched on virtual tensors: charged to the stream, never compiled.

usage: python triton_launch.py GPU    (needs triton; prints one JSON object)
"""
import json
import sys

from revati.shim.activate import activate

rt = activate({"gpu": sys.argv[1], "count_host_cpu": False})

import time  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from revati.shim.engines import triton_launch  # noqa: E402


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


@triton.autotune(configs=[triton.Config({"BLOCK": 128}), triton.Config({"BLOCK": 256})], key=["n"])
@triton.jit
def tuned_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs))


def timed(n: int) -> float:
    x = torch.empty(n, device="cuda", dtype=torch.float16)
    y = torch.empty_like(x)
    out = torch.empty_like(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    add_kernel[(triton.cdiv(n, 1024),)](x, y, out, n, BLOCK=1024)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


small, big = timed(1 << 10), timed(1 << 28)
x = torch.empty(4096, device="cuda")
tuned_kernel[(16,)](x, x, 4096)
# an engine's attention kernel: launched, but its time is the adapter's (the scheduled batch)
from revati.shim.engines.attention_timing import kernels_priced_by_batch  # noqa: E402

with kernels_priced_by_batch():
    big_in_attention = timed(1 << 28)
print(json.dumps({"small_ms": small, "big_ms": big, "big_in_attention_ms": big_in_attention,
                  "launches": dict(triton_launch.LAUNCHES), "kernels": rt.gpus.kernels_launched}))
