"""How much wall time the shim costs per intercepted op, and per 7B forward / decode step.

usage: python benchmarks/shim_overhead.py [--json OUT]
Target (issue 4): <= 15 us wall per cached op.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MICRO = r'''
import json, sys
from revati.shim.activate import activate
rt = activate({"gpu": "h100", "count_host_cpu": False})
import torch
from revati.shim.vtime import REAL
wall = REAL["perf_counter"]
a = torch.empty(64, 64, device="cuda", dtype=torch.float16)
b = torch.empty(64, 64, device="cuda", dtype=torch.float16)
w = torch.empty(128, 64, device="cuda", dtype=torch.float16)
out = {}
def per_op(fn, n):
    fn(); t = wall()
    for _ in range(n): fn()
    return (wall() - t) / n * 1e6
out["cached_add_us"] = per_op(lambda: a + b, 20000)
out["cached_linear_us"] = per_op(lambda: torch.nn.functional.linear(a, w), 20000)
out["cached_view_us"] = per_op(lambda: a.view(4096), 20000)
out["cached_softmax_us"] = per_op(lambda: a.softmax(-1), 20000)
sizes = iter(range(1, 10**9))
def fresh():
    n = next(sizes)
    x = torch.empty(n, 8, device="cuda", dtype=torch.float16)
    return x * 2
t = wall(); N = 2000
for _ in range(N): fresh()
out["uncached_mul_us"] = (wall() - t) / N * 1e6 - out["cached_add_us"]  # minus the empty() factory
import torch as T
base = T.empty(64, 64)
out["cpu_add_us_reference"] = per_op(lambda: base + base, 20000)
print(json.dumps(out))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    micro = json.loads(subprocess.run([sys.executable, "-c", MICRO], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
    hf = json.loads(subprocess.run([sys.executable, str(ROOT / "tests/programs/hf_llama.py"), "h100"],
                                   capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    dec = hf["decode_1"][-1]
    pre = hf["prefill_1x128"]
    rows = [
        ("cached op: add (64x64 fp16)", f"{micro['cached_add_us']:.1f} us"),
        ("cached op: linear", f"{micro['cached_linear_us']:.1f} us"),
        ("cached op: view", f"{micro['cached_view_us']:.1f} us"),
        ("cached op: softmax", f"{micro['cached_softmax_us']:.1f} us"),
        ("uncached op: mul (new shape each call)", f"{micro['uncached_mul_us']:.1f} us"),
        ("reference: real CPU add 64x64", f"{micro['cpu_add_us_reference']:.1f} us"),
        ("Llama-2-7B prefill 1x128: ops", str(pre["ops"])),
        ("Llama-2-7B prefill 1x128: wall", f"{pre['wall_ms']:.1f} ms ({pre['wall_ms'] * 1e3 / pre['ops']:.1f} us/op)"),
        ("Llama-2-7B prefill 1x128: virtual H100", f"{pre['virtual_ms']:.2f} ms"),
        ("Llama-2-7B decode step (batch 1): ops", str(dec["ops"])),
        ("Llama-2-7B decode step: wall", f"{dec['wall_ms']:.1f} ms ({dec['wall_ms'] * 1e3 / dec['ops']:.1f} us/op)"),
        ("Llama-2-7B decode step: virtual H100 (GPU-bound, host CPU not counted)", f"{dec['virtual_ms']:.2f} ms"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"micro": micro, "hf": hf}, indent=2))


if __name__ == "__main__":
    main()
