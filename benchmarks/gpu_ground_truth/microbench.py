"""Ground-truth microbenchmarks: GEMM, attention (torch SDPA, flash backend) and all-reduce over
shape grids, meant to run under ``revati trace`` on a GPU box.

Usage (see README.md beside this file for the whole GPU session)::

    revati trace -o traces/gt-micro-h100 --warmup-steps 1 -- \\
        python benchmarks/gpu_ground_truth/microbench.py --ops gemm,attention \\
        --out traces/gt-micro-h100.events.jsonl

    # all-reduce needs >= 2 GPUs (torchrun starts one traced process per GPU):
    revati trace -o traces/gt-allreduce-h100x8 --warmup-steps 1 -- \\
        torchrun --nproc-per-node 8 benchmarks/gpu_ground_truth/microbench.py --ops allreduce

    # CPU pipeline check (what tests/test_gpu_ground_truth.py runs):
    revati trace -o /tmp/gt --warmup-steps 1 -- python benchmarks/gpu_ground_truth/microbench.py --device cpu --tiny

Pass 0 runs every case once (warm-up, marked step 0); passes 1..--reps time every case again,
each call after an L2 flush and between CUDA events (``--out`` JSON lines), each pass one step.
The trace turns into ``op_samples`` (gemm m,n,k; attn_prefill/attn_decode; all_reduce bytes).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DTYPES, Results, Timer, labelled, pick_device, step  # noqa: E402

# Llama-2-7B projections (n, k): fused QKV, O, fused gate+up, down, LM head
LLAMA7B_NK = [(12288, 4096), (4096, 4096), (22016, 4096), (4096, 11008), (32000, 4096)]
GEMM_M = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
PREFILL = [(b, s) for b in (1, 4, 16) for s in (128, 512, 1024, 2048, 4096) if b * s <= 16384]
DECODE = [(b, kv) for b in (1, 8, 32, 64, 128) for kv in (128, 512, 1024, 2048, 4096)]
ALLREDUCE_BYTES = [2 ** p for p in range(12, 29, 2)]  # 4 KiB .. 256 MiB


@dataclass
class Case:
    name: str
    op: str
    params: dict
    run: Callable[[], object]


def gemm_cases(device, dtype, tiny: bool) -> list[Case]:
    grid = [(m, n, k) for m in ((1, 8, 32) if tiny else GEMM_M)
            for n, k in ([(96, 64), (64, 128)] if tiny else LLAMA7B_NK)]
    cases = []
    for m, n, k in grid:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        cases.append(Case(f"gemm m={m} n={n} k={k}", "gemm", {"m": m, "n": n, "k": k},
                          lambda a=a, b=b: torch.mm(a, b)))
    return cases


def attention_cases(device, dtype, tiny: bool, heads: int, kv_heads: int, head_dim: int) -> list[Case]:
    if tiny:
        heads, kv_heads, head_dim = 4, 2, 16
    prefill = [(1, 16), (2, 32)] if tiny else PREFILL
    decode = [(1, 16), (4, 32)] if tiny else DECODE
    gqa = kv_heads != heads
    cases = []
    for b, s in prefill:
        q = torch.randn(b, heads, s, head_dim, device=device, dtype=dtype)
        kv = torch.randn(b, kv_heads, s, head_dim, device=device, dtype=dtype)
        cases.append(Case(f"attn_prefill b={b} s={s}", "attn_prefill",
                          {"batch_size": b, "q_tokens": s, "kv_len": s, "num_heads": heads,
                           "num_kv_heads": kv_heads, "head_dim": head_dim},
                          lambda q=q, kv=kv: sdpa(q, kv, kv, causal=True, gqa=gqa)))
    for b, kv_len in decode:
        q = torch.randn(b, heads, 1, head_dim, device=device, dtype=dtype)
        kv = torch.randn(b, kv_heads, kv_len, head_dim, device=device, dtype=dtype)
        cases.append(Case(f"attn_decode b={b} kv={kv_len}", "attn_decode",
                          {"batch_size": b, "q_tokens": 1, "kv_len": kv_len, "num_heads": heads,
                           "num_kv_heads": kv_heads, "head_dim": head_dim},
                          lambda q=q, kv=kv: sdpa(q, kv, kv, causal=False, gqa=gqa)))
    return cases


def sdpa(q, k, v, causal: bool, gqa: bool):
    kwargs = {"is_causal": causal}
    if gqa:
        kwargs["enable_gqa"] = True
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)


def allreduce_cases(device, dtype, tiny: bool) -> list[Case]:
    import torch.distributed as dist

    cases = []
    world = dist.get_world_size()
    for size in ([4096, 65536] if tiny else ALLREDUCE_BYTES):
        t = torch.ones(size // torch.tensor([], dtype=dtype).element_size(), device=device, dtype=dtype)
        cases.append(Case(f"all_reduce bytes={size}", "all_reduce", {"message_bytes": size, "world_size": world},
                          lambda t=t: dist.all_reduce(t)))
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="small shapes (CPU pipeline check)")
    p.add_argument("--ops", default="gemm,attention", help="comma list of gemm, attention, allreduce")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16 on cuda, fp32 on cpu")
    p.add_argument("--reps", type=int, default=5, help="timed passes after the warm-up pass")
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=32, help="8 for a GQA (Llama-3-8B-like) grid")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--sdpa-backend", choices=("default", "flash", "efficient", "cudnn", "math"), default="flash")
    p.add_argument("--no-l2-flush", action="store_true")
    p.add_argument("--out", default=None, help="JSON lines of CUDA-event timings (a cross-check of the trace)")
    args = p.parse_args(argv)

    device = pick_device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    ops = {o.strip() for o in args.ops.split(",") if o.strip()}
    unknown = ops - {"gemm", "attention", "allreduce"}
    if unknown:
        p.error(f"unknown --ops {sorted(unknown)}")
    if "allreduce" in ops:
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", "1")) < 2:
            print("microbench: all-reduce needs >= 2 processes (torchrun --nproc-per-node N); skipped", file=sys.stderr)
            ops.discard("allreduce")
        else:
            if device.type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                device = torch.device("cuda", torch.cuda.current_device())
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    cases: list[Case] = []
    if "gemm" in ops:
        cases += gemm_cases(device, dtype, args.tiny)
    if "attention" in ops:
        cases += attention_cases(device, dtype, args.tiny, args.heads, args.kv_heads, args.head_dim)
    if "allreduce" in ops:
        cases += allreduce_cases(device, dtype, args.tiny)

    timer = Timer(device, flush_l2=not args.no_l2_flush)
    results = Results(args.out, {"benchmark": "microbench", "device": str(device), "dtype": str(dtype),
                                 "tiny": args.tiny, "sdpa_backend": args.sdpa_backend})
    with sdpa_backend(args.sdpa_backend, device):
        with torch.inference_mode():
            for rep in range(args.reps + 1):       # rep 0: warm-up (step 0)
                for case in cases:
                    timer.flush()                  # outside the case's range: not part of its time
                    with labelled(case.name):
                        ms = timer.time_ms(case.run)
                    if rep > 0:
                        results.add(case=case.name, op=case.op, dtype=str(dtype).replace("torch.", ""),
                                    rep=rep, event_ms=ms, **case.params)
                timer.sync()
                step()
    results.close()
    if "allreduce" in ops:
        import torch.distributed as dist

        dist.destroy_process_group()
    print(f"microbench: {len(cases)} cases x {args.reps} timed passes on {device} ({dtype})")
    return 0


class sdpa_backend:
    """Pin torch's SDPA backend on a GPU (flash by default); no-op on the CPU."""

    def __init__(self, name: str, device: torch.device):
        self.ctx = None
        if device.type == "cuda" and name != "default":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                       "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
            self.ctx = sdpa_kernel(backend)

    def __enter__(self):
        if self.ctx is not None:
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False


if __name__ == "__main__":
    sys.exit(main())
