"""Tensor parallelism across processes: a Llama-2-7B-shaped layer stack, Megatron-style sharding.

usage: revati emulate --num-gpus W --no-host-cpu -- python tp_block.py W [LAYERS]
Each rank is its own process (torch.multiprocessing spawn); every layer does a column-parallel
QKV and gate/up projection, attention over the rank's heads, a row-parallel output and down
projection, and an all-reduce after each row-parallel projection (two per layer). Rank 0 prints
one JSON object: per rank, per decode step, the virtual time and the predicted kernel and
collective time launched in that step.
"""
import json
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HIDDEN, HEADS, INTER = 4096, 32, 11008


def rank_main(rank: int, world: int, layers: int, port: int, out_dir: str) -> None:
    import time

    from revati.shim import runtime

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rt = runtime.get()
    h, f = HEADS // world, INTER // world
    dt = torch.float16
    w = [dict(qkv=torch.empty(3 * h * 128, HIDDEN, device="cuda", dtype=dt),
              o=torch.empty(HIDDEN, h * 128, device="cuda", dtype=dt),
              gate_up=torch.empty(2 * f, HIDDEN, device="cuda", dtype=dt),
              down=torch.empty(HIDDEN, f, device="cuda", dtype=dt)) for _ in range(layers)]
    kv_len = 512
    cache = torch.empty(2, 1, h, kv_len, 128, device="cuda", dtype=dt)
    steps = []
    with torch.inference_mode():
        for _ in range(3):
            x = torch.empty(1, 1, HIDDEN, device="cuda", dtype=dt)
            torch.cuda.synchronize()
            dist.barrier()
            k0, c0 = rt.gpus.kernel_ns_total, rt.gpus.collective_ns_total
            t0 = time.perf_counter_ns()
            for lw in w:
                qkv = torch.nn.functional.linear(x, lw["qkv"]).view(1, 1, 3, h, 128)
                q = qkv[:, :, 0].transpose(1, 2)
                att = torch.nn.functional.scaled_dot_product_attention(q, cache[0], cache[1])
                y = torch.nn.functional.linear(att.transpose(1, 2).reshape(1, 1, h * 128), lw["o"])
                dist.all_reduce(y)
                x = x + y
                gu = torch.nn.functional.linear(x, lw["gate_up"])
                a = torch.nn.functional.silu(gu[..., :f]) * gu[..., f:]
                z = torch.nn.functional.linear(a, lw["down"])
                dist.all_reduce(z)
                x = x + z
            torch.cuda.synchronize()
            steps.append({"virtual_ns": time.perf_counter_ns() - t0,
                          "kernel_ns": rt.gpus.kernel_ns_total - k0,
                          "collective_ns": rt.gpus.collective_ns_total - c0})
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
        json.dump({"rank": rank, "device": torch.cuda.current_device(), "steps": steps}, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    world = int(sys.argv[1])
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    port = 29500 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(rank_main, args=(world, layers, port, out), nprocs=world, join=True)
        ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(world)]
    print(json.dumps({"world": world, "layers": layers, "ranks": ranks}))
