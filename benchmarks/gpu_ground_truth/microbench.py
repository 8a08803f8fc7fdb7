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
import json
import math
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

# --grid zoo: every projection of the shipped model zoo at tensor parallelism 1/2/4/8, with m
# between the powers of two too (the interpolation rung of the predictor needs such points).
ZOO_DIR = Path(__file__).resolve().parents[2] / "revati" / "models_zoo" / "configs"
ZOO_TP = (1, 2, 4, 8)
ZOO_GEMM_M = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
              6144, 8192]
ZOO_PREFILL = [(b, s) for b in (1, 4, 16) for s in (128, 512, 1024, 2048, 4096) if b * s <= 16384]
ZOO_DECODE = [(b, kv) for b in (1, 8, 32, 128) for kv in (128, 1024, 4096)]


def zoo_models() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(ZOO_DIR.glob("*.json")) if p.stem != "tiny-llama"}


def zoo_projections() -> list[tuple[int, int]]:
    """(n, k) of each model's QKV, O, gate+up, down and LM head, sharded as vLLM shards them:
    column-parallel layers split n, row-parallel ones split k."""
    nk = set()
    for cfg in zoo_models().values():
        h, inter, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
        kv, vocab = cfg.get("num_key_value_heads", heads), cfg["vocab_size"]
        d = cfg.get("head_dim") or h // heads
        for tp in ZOO_TP:
            if heads % tp or inter % tp:
                continue
            kv_tp = max(1, kv // tp)       # KV heads are replicated once tp > their count
            nk |= {((heads // tp + 2 * kv_tp) * d, h), (h, heads // tp * d), (2 * inter // tp, h),
                   (h, inter // tp), (-(-vocab // tp), h)}
    return sorted(nk)


def zoo_attention_heads() -> list[tuple[int, int, int]]:
    """(query heads, KV heads, head dim) per GPU of each model at each tensor parallelism."""
    shapes = set()
    for cfg in zoo_models().values():
        heads = cfg["num_attention_heads"]
        kv, d = cfg.get("num_key_value_heads", heads), cfg.get("head_dim") or cfg["hidden_size"] // heads
        for tp in ZOO_TP:
            if heads % tp == 0:
                shapes.add((heads // tp, max(1, kv // tp), d))
    return sorted(shapes)


@dataclass
class Case:
    name: str
    op: str
    params: dict
    run: Callable[[], object]


def gemm_grid(grid: str, tiny: bool) -> list[tuple[int, int, int]]:
    if tiny:
        nk = [(96, 64), (64, 128)] + ([(40, 64)] if grid == "zoo" else [])
        return [(m, n, k) for m in (1, 8, 32) for n, k in nk]
    if grid == "zoo":
        return [(m, n, k) for n, k in zoo_projections() for m in ZOO_GEMM_M]
    return [(m, n, k) for m in GEMM_M for n, k in LLAMA7B_NK]


def gemm_cases(device, dtype, tiny: bool, grid: str = "llama7b") -> list[Case]:
    shapes = gemm_grid(grid, tiny)
    # Operands are views of two random buffers (a grid's own tensors would need tens of GiB):
    # each view starts at the buffer's start, so alignment is that of a fresh allocation.
    a_buf = torch.randn(max(m * k for m, _, k in shapes), device=device, dtype=dtype)
    b_buf = torch.randn(max(k * n for _, n, k in shapes), device=device, dtype=dtype)
    cases = []
    for m, n, k in shapes:
        a = a_buf[: m * k].view(m, k)
        b = b_buf[: k * n].view(k, n)
        cases.append(Case(f"gemm m={m} n={n} k={k}", "gemm", {"m": m, "n": n, "k": k},
                          lambda a=a, b=b: torch.mm(a, b)))
    return cases


def attention_cases(device, dtype, tiny: bool, heads: int, kv_heads: int, head_dim: int,
                    grid: str = "llama7b") -> list[Case]:
    if grid == "zoo":
        head_shapes = [(4, 2, 16), (2, 1, 16)] if tiny else zoo_attention_heads()
        prefill = [(1, 16), (2, 32)] if tiny else ZOO_PREFILL
        decode = [(1, 16), (4, 32)] if tiny else ZOO_DECODE
        return [c for h, kv, d in head_shapes
                for c in _attention_cases(device, dtype, h, kv, d, prefill, decode, tag=f" h={h} kvh={kv} d={d}")]
    if tiny:
        heads, kv_heads, head_dim = 4, 2, 16
    prefill = [(1, 16), (2, 32)] if tiny else PREFILL
    decode = [(1, 16), (4, 32)] if tiny else DECODE
    return _attention_cases(device, dtype, heads, kv_heads, head_dim, prefill, decode, tag="")


def _attention_cases(device, dtype, heads, kv_heads, head_dim, prefill, decode, tag: str) -> list[Case]:
    gqa = kv_heads != heads
    # q, k and v are views of two random buffers (per-case tensors of a large grid need tens of GiB)
    q_need = max([b * heads * s * head_dim for b, s in prefill] + [b * heads * head_dim for b, _ in decode])
    kv_need = max([b * kv_heads * s * head_dim for b, s in prefill] + [b * kv_heads * n * head_dim for b, n in decode])
    q_buf = torch.randn(q_need, device=device, dtype=dtype)
    kv_buf = torch.randn(kv_need, device=device, dtype=dtype)

    def view(buf, *shape):
        return buf[: math.prod(shape)].view(*shape)

    cases = []
    for b, s in prefill:
        q, kv = view(q_buf, b, heads, s, head_dim), view(kv_buf, b, kv_heads, s, head_dim)
        cases.append(Case(f"attn_prefill b={b} s={s}{tag}", "attn_prefill",
                          {"batch_size": b, "q_tokens": s, "kv_len": s, "num_heads": heads,
                           "num_kv_heads": kv_heads, "head_dim": head_dim},
                          lambda q=q, kv=kv: sdpa(q, kv, kv, causal=True, gqa=gqa)))
    for b, kv_len in decode:
        q, kv = view(q_buf, b, heads, 1, head_dim), view(kv_buf, b, kv_heads, kv_len, head_dim)
        cases.append(Case(f"attn_decode b={b} kv={kv_len}{tag}", "attn_decode",
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
    p.add_argument("--grid", choices=("llama7b", "zoo"), default="llama7b",
                   help="llama7b: Llama-2-7B's projections and one head layout; zoo: every shipped model's "
                        "projections and head layouts at tensor parallelism 1/2/4/8 (--heads etc. ignored)")
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
        cases += gemm_cases(device, dtype, args.tiny, args.grid)
    if "attention" in ops:
        cases += attention_cases(device, dtype, args.tiny, args.heads, args.kv_heads, args.head_dim, args.grid)
    if "allreduce" in ops:
        cases += allreduce_cases(device, dtype, args.tiny)

    timer = Timer(device, flush_l2=not args.no_l2_flush)
    results = Results(args.out, {"benchmark": "microbench", "device": str(device), "dtype": str(dtype),
                                 "tiny": args.tiny, "grid": args.grid, "sdpa_backend": args.sdpa_backend})
    with sdpa_backend(args.sdpa_backend, device):
        with torch.inference_mode():
            for rep in range(args.reps + 1):       # rep 0: warm-up (step 0)
                failed = []
                for case in cases:
                    timer.flush()                  # outside the case's range: not part of its time
                    try:
                        with labelled(case.name):
                            ms = timer.time_ms(case.run)
                    except RuntimeError as exc:    # a backend that refuses a shape: the rest still runs
                        if rep > 0:
                            raise
                        failed.append(case)
                        print(f"microbench: {case.name} skipped: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
                        continue
                    if rep > 0:
                        results.add(case=case.name, op=case.op, dtype=str(dtype).replace("torch.", ""),
                                    rep=rep, event_ms=ms, **case.params)
                cases = [c for c in cases if c not in failed]
                timer.sync()
                step()
                print(f"microbench: pass {rep}/{args.reps} done ({len(cases)} cases)", file=sys.stderr, flush=True)
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
